#include "kernels/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace ge::kernels {
namespace {

// Runs n_tasks on the pool and checks that each ran exactly once.
void expect_each_task_runs_once(ThreadPool& pool, int64_t n_tasks) {
  std::vector<std::atomic<int>> counts(static_cast<size_t>(n_tasks));
  pool.run(n_tasks, [&](int64_t task) { counts[static_cast<size_t>(task)].fetch_add(1); });
  for (int64_t i = 0; i < n_tasks; ++i) ASSERT_EQ(counts[static_cast<size_t>(i)].load(), 1) << "task " << i;
}

TEST(ThreadPool, SizeCountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
  EXPECT_GE(ThreadPool(0).size(), 1);
}

TEST(ThreadPool, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    for (int64_t n_tasks : {0, 1, 2, 3, 5, 64, 1000}) {
      SCOPED_TRACE(testing::Message() << threads << " threads, " << n_tasks << " tasks");
      expect_each_task_runs_once(pool, n_tasks);
    }
  }
}

TEST(ThreadPool, ZeroTasksNeverCallsFn) {
  ThreadPool pool(3);
  bool called = false;
  pool.run(0, [&](int64_t) { called = true; });
  pool.run(-1, [&](int64_t) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPool, SingleThreadRunsInlineInOrder) {
  ThreadPool pool(1);
  const auto caller = std::this_thread::get_id();
  std::vector<int64_t> order;
  pool.run(5, [&](int64_t task) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    order.push_back(task);
  });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

// Keeps a task busy for about `ns` nanoseconds, long enough for workers to join the job.
void busy_wait(std::chrono::nanoseconds ns) {
  const auto end = std::chrono::steady_clock::now() + ns;
  while (std::chrono::steady_clock::now() < end) {
  }
}

// Back-to-back regions are the decode pattern; a lost wake-up, a worker joining a finished job, or a
// reused job slot would show up as a wrong sum or a hang here. Instant tasks mostly finish before the
// workers join; busy ones make them join mid-job.
TEST(ThreadPool, ManyConsecutiveRunsSeeTheirOwnJob) {
  ThreadPool pool(3);
  for (int64_t round = 0; round < 20000; ++round) {
    const int64_t n_tasks = 1 + round % 7;
    const bool busy = round % 2 == 1;
    std::atomic<int64_t> sum{0};
    pool.run(n_tasks, [&](int64_t task) {
      if (busy) busy_wait(std::chrono::nanoseconds(500));
      sum.fetch_add(round * 100 + task);
    });
    ASSERT_EQ(sum.load(), n_tasks * round * 100 + n_tasks * (n_tasks - 1) / 2) << "round " << round;
  }
}

// Workers fall asleep after their spin window; the next run must wake them, not hang.
TEST(ThreadPool, WakesSleepingWorkers) {
  ThreadPool pool(3);
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    expect_each_task_runs_once(pool, 16);
  }
}

TEST(ThreadPool, WorkersShareTheLoad) {
  ThreadPool pool(2);
  std::atomic<int> distinct_threads{0};
  std::atomic<bool> seen_caller{false}, seen_other{false};
  const auto caller = std::this_thread::get_id();
  pool.run(64, [&](int64_t) {
    // Slow tasks, so the worker has time to join even if it was asleep.
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    auto& flag = std::this_thread::get_id() == caller ? seen_caller : seen_other;
    if (!flag.exchange(true)) distinct_threads.fetch_add(1);
  });
  EXPECT_EQ(distinct_threads.load(), 2);
}

TEST(ThreadPool, DestroysCleanlyWhileWorkersSpinOrSleep) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(3);
    if (i % 2 == 0) expect_each_task_runs_once(pool, 8);  // odd rounds destroy a pool that never ran
  }
  ThreadPool sleeping(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

}  // namespace
}  // namespace ge::kernels
