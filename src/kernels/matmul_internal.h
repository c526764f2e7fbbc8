// The individual matmul paths behind matmul(), exposed so that tests and benchmarks can force each one on
// CPUs that would normally pick another.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/mlx_quant.h"
#include "kernels/thread_pool.h"
#include "tensor/tensor.h"

namespace ge::kernels::detail {

// Highway kernels over f32 FMAs, weights widened (Q8_0/Q4_0: dequantized) in registers; every dtype.
// Dispatches at run time to the best target that hwy::SupportedTargets() allows (tests narrow it with
// hwy::SetSupportedTargetsForTest).
void matmul_highway(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y);
void matmul_highway_mlx(ThreadPool& pool, const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y);
const char* highway_target_name();

// matmul() hands exact products of F32, F16 and BF16 weights with at least this many tokens to gemm()
// (kernels/gemm.h), which packs the weights into f32 panels first (~0.7 cycle per weight) and then runs
// near the FMA peak; fewer tokens take matmul_highway, which reads the weights in place. Measured on the
// BM_Prefill crossover shapes (Zen 3, 2 threads): with F32 weights gemm wins from 32 tokens on 4 of 5
// shapes and on all from 48; BF16 weights, half the bytes for the dot-product kernels, break even around
// 48 tokens and gemm wins from 64 on 4 of 5 (1.05-1.2x; N = 640, K = 2048 evens out at ~96). F16 weights
// go with BF16.
inline int64_t min_gemm_tokens(DType dtype) {
  return dtype == DType::F32 ? 32 : 64;
}

// vdpbf16ps kernel for BF16 weights only, activations rounded to bf16 first (Precision::kReducedActivations).
// Call only where cpu_has_avx512bf16(). matmul() takes it from kMinBf16Tokens tokens on: it computes
// 16 tokens at a time, so fewer run mostly on padding. With weights streamed from DRAM (BM_FewTokens) it
// is even with the fma path at 6 tokens and 1.1-1.3x faster at 8.
inline constexpr int64_t kMinBf16Tokens = 8;
void matmul_avx512bf16(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y);
bool cpu_has_avx512bf16();

// vpdpbusd kernel for Q8_0 and Q4_0 weights only, activations quantized first to Q8_0 blocks exactly as
// quantize_row_q8_0 does (Precision::kReducedActivations); the products of each block pair are summed in
// integers and scaled by d_w * d_x. Call only where cpu_has_avx512vnni(). matmul() takes it from
// kMinVnniTokens tokens on: with weights streamed from DRAM (BM_FewTokens) it is ~1.5x (Q8_0) and ~1.8x
// (Q4_0) slower than the fma path at 4 tokens (16-token blocks run mostly on padding) and 1.07-1.15x faster
// at 8, for both formats.
inline constexpr int64_t kMinVnniTokens = 8;
void matmul_vnni(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y);
bool cpu_has_avx512vnni();

// Whether the integer kernels of RepackedMatrix can run (AVX2 and FMA).
bool cpu_has_avx2();

// Rows per task, a multiple of tile_rows. kTasksPerThread tasks per thread let threads that run at
// different speeds finish together. Weights reused by several token tiles must fit in L2 for the whole
// task; weights streamed once are capped at 1 MiB per task (~30 us from DRAM), which still leaves each of
// the tile_rows stripes (see RowStripes) long enough for the prefetcher.
inline int64_t rows_per_task(int64_t rows, size_t row_bytes, int threads, int64_t tile_rows, bool reused) {
  constexpr int64_t kTasksPerThread = 8;
  constexpr size_t kL2Budget = size_t{512} << 10;
  constexpr size_t kStreamBudget = size_t{1} << 20;
  const int64_t for_balance = rows / (kTasksPerThread * threads);
  const int64_t for_cache =
      static_cast<int64_t>((reused ? kL2Budget : kStreamBudget) / std::max<size_t>(row_bytes, 1));
  const int64_t chunk = std::min(for_balance, for_cache) / tile_rows * tile_rows;
  return std::max(chunk, tile_rows);
}

// A task's rows [begin, end) as tile_rows equal stripes plus leftover rows: tile j reads row begin + j of
// every stripe. Each stripe is then one sequential stream; reading tile_rows adjacent rows side by side
// instead defeats the hardware prefetcher (one core, bf16 GEMV from DRAM: 10 GB/s against 25 GB/s).
struct RowStripes {
  RowStripes(size_t begin, size_t end, size_t tile_rows)
      : stripe((end - begin) / tile_rows), leftover_begin(begin + stripe * tile_rows) {}
  size_t stripe;          // rows per stripe, the distance between a tile's rows
  size_t leftover_begin;  // rows from here to end are done one at a time
};

}  // namespace ge::kernels::detail
