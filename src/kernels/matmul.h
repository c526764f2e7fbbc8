// Matrix products of f32 activations with weights stored in any supported dtype. Weights are read in
// their stored format (bf16/f16 are widened in registers), never copied to f32 first.
#pragma once
#include <cstdint>

#include "kernels/thread_pool.h"
#include "tensor/tensor.h"

namespace ge::kernels {

enum class Precision {
  kExact,            // f32 activations, f32 accumulation (default)
  kBf16Activations,  // activations rounded to bf16 (round-to-nearest-even) before the product, as llama.cpp
                     // does; f32 accumulation
};

// y[t, o] = sum_i x[t, i] * w[o, i] for t < n_tokens, o < w.rows(); x is [n_tokens, w.cols()] and y is
// [n_tokens, w.rows()], both dense row-major. Work is split over output rows across the pool. Weights
// must be F32, F16 or BF16 (accumulation in f32, products exact); other dtypes throw std::invalid_argument.
// kBf16Activations is a request, not a guarantee: it takes the ~2x faster vdpbf16ps kernel only for BF16
// weights on AVX512_BF16 CPUs and prefill-sized n_tokens, and computes exactly (kExact) everywhere else.
// That kernel also flushes denormal activations and products to zero, as vdpbf16ps does.
void matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y,
            Precision precision = Precision::kExact);

// The same product without SIMD or threads: the reference every SIMD kernel is tested against.
void matmul_reference(const Tensor& w, const float* x, int64_t n_tokens, float* y);

// Name of the Highway target that matmul() dispatches to on this CPU (e.g. "AVX3", "AVX2").
const char* matmul_target();

}  // namespace ge::kernels
