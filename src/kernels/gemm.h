// General matrix products of f32 activations with a matrix in f32, f16 or bf16 for large token batches
// (prefill, the vision tower, attention as GEMMs). BLIS-style: the matrix is widened into f32 panels that
// stay in L2 while a register-blocked microkernel sweeps the activations over them, so each weight loaded
// is reused across 6 tokens and each activation across 2 vectors of outputs.
#pragma once
#include <cstdint>

#include "kernels/thread_pool.h"
#include "tensor/dtype.h"

namespace ge::kernels {

// A matrix operand: `rows` x `cols` values of `dtype` (F32, F16 or BF16) at `data`, row r at
// data + r * stride elements (stride >= cols: a view into a wider matrix works).
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0, stride = 0;
};

// y[i, j] (+)= sum_p x[i, p] * B[p, j] for i < m, j < n, where B = w^T when w is [n, k] (w_k_major = false:
// a Linear weight [out, in]) or B = w when w is [k, n] (w_k_major = true: e.g. V in attention). x is f32
// [m, k] with row stride ldx; y is f32 with row stride ldy. accumulate: add to y instead of overwriting.
// Products are exact f32 products of x with the f32 value of each stored weight, summed in f32.
// Single-threaded (callers split the work, e.g. attention runs one head per task). Throws
// std::invalid_argument for other dtypes or strides shorter than a row.
void gemm(const float* x, int64_t ldx, int64_t m, const MatrixView& w, bool w_k_major, float* y, int64_t ldy,
          bool accumulate = false);

// The same, split over the pool: by output columns, and also by rows of x where there are too few columns
// to keep every thread busy.
void gemm(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const MatrixView& w, bool w_k_major,
          float* y, int64_t ldy, bool accumulate = false);

}  // namespace ge::kernels
