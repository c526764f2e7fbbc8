#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/bandwidth.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/bandwidth.h"

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sums n floats (a multiple of kStreams * 2 vectors) as kStreams equal parts read side by side, the
// access pattern of the matmul kernels (see RowStripes); two accumulators per stream keep the adds off
// the critical path.
float SumStreams(const float* p, size_t n) {
  constexpr size_t kStreams = 4;
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  const size_t part = n / kStreams;
  auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  for (size_t i = 0; i < part; i += 2 * lanes) {
    for (size_t s = 0; s < kStreams; ++s) {
      acc0 = hn::Add(acc0, hn::LoadU(d, p + s * part + i));
      acc1 = hn::Add(acc1, hn::LoadU(d, p + s * part + i + lanes));
    }
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
}

// `iterations` x kChains FMAs on vectors of lanes; returns the lane count, and a value the compiler must
// keep (so that it cannot drop the loop).
size_t FmaChains(size_t iterations, float* sink) {
  constexpr size_t kChains = 10;  // enough independent chains to cover the FMA latency on 2 ports
  const hn::ScalableTag<float> d;
  const auto a = hn::Set(d, 0.999999f), b = hn::Set(d, 1e-7f);
  hn::Vec<decltype(d)> acc[kChains];
  for (size_t c = 0; c < kChains; ++c) acc[c] = hn::Set(d, static_cast<float>(c));
  for (size_t i = 0; i < iterations; ++i)
    for (size_t c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], a, b);
  auto sum = acc[0];
  for (size_t c = 1; c < kChains; ++c) sum = hn::Add(sum, acc[c]);
  *sink = hn::GetLane(sum);
  return hn::Lanes(d) * kChains;
}

}  // namespace ge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ge::kernels {
HWY_EXPORT(SumStreams);
HWY_EXPORT(FmaChains);

double measure_fma_peak_gflops(ThreadPool& pool) {
  constexpr size_t kIterations = 20'000'000;
  constexpr int kPasses = 3;
  std::vector<float> sinks(static_cast<size_t>(pool.size()));
  std::vector<size_t> fmas(static_cast<size_t>(pool.size()));
  double best_seconds = 1e30;
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    pool.run(pool.size(), [&](int64_t t) {
      fmas[static_cast<size_t>(t)] = HWY_DYNAMIC_DISPATCH(FmaChains)(kIterations, &sinks[static_cast<size_t>(t)]);
    });
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best_seconds = std::min(best_seconds, elapsed.count());
  }
  double flops = 0;
  for (size_t f : fmas) flops += 2.0 * static_cast<double>(f) * kIterations;
  return flops / best_seconds / 1e9;
}

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes) {
  constexpr size_t kChunkFloats = size_t{1} << 20;  // 4 MiB per task
  constexpr int kPasses = 5;
  const size_t n_chunks = std::max<size_t>(1, bytes / (kChunkFloats * sizeof(float)));
  auto buffer = hwy::AllocateAligned<float>(n_chunks * kChunkFloats);
  // Touch the pages from the threads that will read them, so that they are mapped before timing.
  pool.run(static_cast<int64_t>(n_chunks), [&](int64_t c) {
    std::fill_n(buffer.get() + static_cast<size_t>(c) * kChunkFloats, kChunkFloats, 1.0f);
  });
  std::vector<float> sums(n_chunks);
  double best_seconds = 1e30;
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    pool.run(static_cast<int64_t>(n_chunks), [&](int64_t c) {
      const float* chunk = buffer.get() + static_cast<size_t>(c) * kChunkFloats;
      sums[static_cast<size_t>(c)] = HWY_DYNAMIC_DISPATCH(SumStreams)(chunk, kChunkFloats);
    });
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best_seconds = std::min(best_seconds, elapsed.count());
  }
  // Every element is 1 and the sums are exact, so this checks that each chunk was read in full; using
  // the sums also keeps the compiler from discarding the reads.
  if (std::any_of(sums.begin(), sums.end(), [](float s) { return s != static_cast<float>(kChunkFloats); }))
    return 0;
  return static_cast<double>(n_chunks * kChunkFloats * sizeof(float)) / best_seconds / 1e9;
}

}  // namespace ge::kernels
#endif  // HWY_ONCE
