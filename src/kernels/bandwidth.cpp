#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/bandwidth.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "kernels/bandwidth.h"

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sums n floats (a multiple of streams * 2 vectors) as `streams` equal parts read side by side: one core
// keeps more cache-line fetches in flight across several independent streams than along one.
float SumStreams(const float* p, size_t n, size_t streams) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  const size_t part = n / streams;
  auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  for (size_t i = 0; i < part; i += 2 * lanes) {
    for (size_t s = 0; s < streams; ++s) {
      acc0 = hn::Add(acc0, hn::LoadU(d, p + s * part + i));
      acc1 = hn::Add(acc1, hn::LoadU(d, p + s * part + i + lanes));
    }
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
}

}  // namespace ge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ge::kernels {
HWY_EXPORT(SumStreams);

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes) {
  constexpr size_t kChunkFloats = size_t{1} << 20;  // 4 MiB per task
  constexpr int kPasses = 5;
  const size_t streams = std::getenv("GE_BW_STREAMS") ? std::atoi(std::getenv("GE_BW_STREAMS")) : 4;
  const size_t n_chunks = std::max<size_t>(1, bytes / (kChunkFloats * sizeof(float)));
  auto buffer = hwy::AllocateAligned<float>(n_chunks * kChunkFloats);
  // Touch the pages from the threads that will read them, so that they are mapped before timing.
  pool.run(static_cast<int64_t>(n_chunks), [&](int64_t c) {
    std::fill_n(buffer.get() + static_cast<size_t>(c) * kChunkFloats, kChunkFloats, 1.0f);
  });
  std::vector<float> sums(n_chunks);  // consumed below, so that the reads cannot be optimized away
  double best_seconds = 1e30;
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    pool.run(static_cast<int64_t>(n_chunks), [&](int64_t c) {
      const float* chunk = buffer.get() + static_cast<size_t>(c) * kChunkFloats;
      sums[static_cast<size_t>(c)] = HWY_DYNAMIC_DISPATCH(SumStreams)(chunk, kChunkFloats, streams);
    });
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best_seconds = std::min(best_seconds, elapsed.count());
  }
  float total = 0;
  for (float s : sums) total += s;
  if (total != static_cast<float>(n_chunks * kChunkFloats)) return 0;  // a read went wrong
  return static_cast<double>(n_chunks * kChunkFloats * sizeof(float)) / best_seconds / 1e9;
}

}  // namespace ge::kernels
#endif  // HWY_ONCE
