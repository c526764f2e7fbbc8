// How fast this machine streams memory into the cores (the ceiling for decoding, where every weight is
// read once per token) and how fast it multiplies (the ceiling for batched work: prefill, image encoding).
#pragma once
#include <cstddef>

#include "kernels/thread_pool.h"

namespace ge::kernels {

// Read bandwidth in GB/s (1e9 bytes per second) over a freshly allocated buffer of `bytes` (make it far
// larger than the last-level cache), summed by all of the pool's threads; the best of a few passes.
// Returns 0 if a pass read the buffer wrongly (a bug, not a measurement).
double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes = size_t{1} << 30);

// Peak f32 fused multiply-add rate in GFLOP/s (2 per lane per FMA) of the best SIMD target, summed over
// the pool's threads: independent FMA chains held in registers, the best of a few passes.
double measure_fma_peak_gflops(ThreadPool& pool);

}  // namespace ge::kernels
