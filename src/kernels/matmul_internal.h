// The individual matmul paths behind matmul(), exposed so that tests and benchmarks can force each one on
// CPUs that would normally pick another.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/thread_pool.h"
#include "tensor/tensor.h"

namespace ge::kernels::detail {

// Highway kernels over f32 FMAs, weights widened in registers; every dtype. Dispatches at run time to the
// best target that hwy::SupportedTargets() allows (tests narrow it with hwy::SetSupportedTargetsForTest).
void matmul_highway(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y);
const char* highway_target_name();

// vdpbf16ps kernels for BF16 weights: activations are split into bf16 hi + lo parts, so products keep
// 16 significant bits of x instead of bf16's 8. Only call when cpu_has_avx512bf16().
bool cpu_has_avx512bf16();
void matmul_avx512bf16(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y);

// Rows per task, a multiple of `tile_rows`: enough tasks for the threads to balance, few enough that task
// hand-out costs nothing, and small enough that a task's weights stay in L2 while each token tile
// reuses them.
inline int64_t rows_per_task(int64_t rows, size_t row_bytes, int threads, int64_t tile_rows) {
  constexpr int64_t kTasksPerThread = 8;
  constexpr int64_t kMaxRows = 64;
  constexpr size_t kL2Budget = 512 * 1024;
  const int64_t for_balance = rows / (kTasksPerThread * threads);
  const int64_t for_l2 = static_cast<int64_t>(kL2Budget / std::max<size_t>(row_bytes, 1));
  const int64_t chunk = std::min({for_balance, for_l2, kMaxRows}) / tile_rows * tile_rows;
  return std::max(chunk, tile_rows);
}

}  // namespace ge::kernels::detail
