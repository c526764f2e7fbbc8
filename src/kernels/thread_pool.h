// A persistent pool: workers are created once and spin briefly, then sleep, between jobs, so that the
// ~100 parallel regions of one decoded token cost microseconds, not thread creations.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ge::kernels {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // total threads, the calling one included; <= 0 means all cores
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task) for every task in [0, n_tasks), spread over all threads; returns when all are done.
  // The callable is passed by reference through a type-erased pointer: no allocation per call. fn must
  // not throw, and must not call run() on the same pool.
  template <class F>
  void run(int64_t n_tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    dispatch(
        n_tasks, [](void* ctx, int64_t task) { (*static_cast<Fn*>(ctx))(task); }, &fn);
  }

 private:
  using TaskFn = void (*)(void*, int64_t);
  void dispatch(int64_t n_tasks, TaskFn fn, void* ctx);
  void worker_loop();
  // Returns the first job word whose generation differs from `seen`, spinning before sleeping.
  uint64_t wait_for_job(uint32_t seen);
  // Counts this worker into the job of generation `gen` unless the caller has already closed it.
  bool try_join(uint32_t gen);
  void close_job();
  void work_on_current_job();
  void publish(uint64_t job_word);

  std::vector<std::thread> workers_;

  // The job: written by the caller only while the previous job is closed (no worker inside it, none
  // able to join it), read by workers only after they joined.
  int64_t n_tasks_ = 0;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;

  // job_ packs (generation << 32) | closed bit | number of workers inside the job. Workers join and
  // leave with atomic updates of this word and the caller closes the job with a compare-and-swap once
  // none is inside, so a worker that was descheduled before joining can never make the caller wait.
  // Each hot atomic sits on its own cache line: workers hammer next_task_ while others poll job_.
  alignas(64) std::atomic<uint64_t> job_{0};
  alignas(64) std::atomic<int64_t> next_task_{0};
  alignas(64) std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  uint32_t generation_ = 0;  // the caller's count of jobs published
};

}  // namespace ge::kernels
