#include "kernels/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ge::kernels {
namespace {

// Long enough to bridge the gap between the parallel regions of one decoded token, short enough that an
// idle pool stops burning cores almost at once.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(100);
// Reading the clock costs ~20 ns; a few dozen pauses between reads keep that out of the wake-up latency.
constexpr int kPausesPerClockRead = 32;
constexpr int kSpinsBeforeYield = 4096;

constexpr uint64_t kClosed = uint64_t{1} << 31;
uint32_t generation_of(uint64_t job_word) {
  return static_cast<uint32_t>(job_word >> 32);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  // stop_ is published by the same store that wakes the workers, so none can miss it.
  stop_.store(true, std::memory_order_relaxed);
  publish((uint64_t{++generation_} << 32) | kClosed);
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::dispatch(int64_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(ctx, i);
    return;
  }
  // Safe to overwrite: the previous job is closed, so no worker is inside it or can still join it.
  n_tasks_ = n_tasks;
  fn_ = fn;
  ctx_ = ctx;
  next_task_.store(0, std::memory_order_relaxed);
  publish(uint64_t{++generation_} << 32);
  work_on_current_job();
  close_job();
}

void ThreadPool::publish(uint64_t job_word) {
  // seq_cst pairs with the sleeper count in wait_for_job: either this thread sees the sleeper and wakes
  // it, or the sleeper sees the new job before it waits.
  job_.store(job_word, std::memory_order_seq_cst);
  if (sleeping_workers_.load(std::memory_order_seq_cst) == 0) return;
  // Taking the mutex orders this notify after any sleeper that counted itself has started waiting.
  { std::lock_guard lock(mutex_); }
  wake_.notify_all();
}

void ThreadPool::close_job() {
  const uint64_t open_and_empty = uint64_t{generation_} << 32;
  for (int spins = 0;; ++spins) {
    uint64_t expected = open_and_empty;
    // Fails while workers are still inside; acquire makes their tasks' writes visible on success.
    if (job_.compare_exchange_weak(expected, open_and_empty | kClosed, std::memory_order_acquire,
                                   std::memory_order_relaxed))
      return;
    if (spins < kSpinsBeforeYield) {
      cpu_relax();
    } else {
      std::this_thread::yield();  // a worker inside the job was descheduled; let it finish
    }
  }
}

void ThreadPool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    seen = generation_of(wait_for_job(seen));
    if (stop_.load(std::memory_order_relaxed)) return;
    if (!try_join(seen)) continue;  // finished and closed before this worker got to it
    work_on_current_job();
    job_.fetch_sub(1, std::memory_order_release);
  }
}

uint64_t ThreadPool::wait_for_job(uint32_t seen) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinBeforeSleep;
  for (;;) {
    for (int i = 0; i < kPausesPerClockRead; ++i) {
      const uint64_t word = job_.load(std::memory_order_acquire);
      if (generation_of(word) != seen) return word;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
  }
  std::unique_lock lock(mutex_);
  sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
  uint64_t word = 0;
  wake_.wait(lock, [&] {
    word = job_.load(std::memory_order_seq_cst);
    return generation_of(word) != seen;
  });
  sleeping_workers_.fetch_sub(1, std::memory_order_relaxed);
  return word;
}

bool ThreadPool::try_join(uint32_t gen) {
  uint64_t word = job_.load(std::memory_order_relaxed);
  for (;;) {
    if (generation_of(word) != gen || (word & kClosed) != 0) return false;
    // acquire: the job fields were written before the store that opened this generation.
    if (job_.compare_exchange_weak(word, word + 1, std::memory_order_acquire, std::memory_order_relaxed))
      return true;
  }
}

void ThreadPool::work_on_current_job() {
  for (;;) {
    const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) return;
    fn_(ctx_, task);
  }
}

}  // namespace ge::kernels
