// Matrix products of f32 activations with weights stored in any supported dtype. Weights are read in
// their stored format (bf16/f16 widened, Q8_0/Q4_0 blocks dequantized in registers), never copied to f32
// first.
#pragma once
#include <cstdint>

#include "kernels/mlx_quant.h"
#include "kernels/thread_pool.h"
#include "tensor/tensor.h"

namespace ge::kernels {

enum class Precision {
  kExact,            // f32 activations, f32 accumulation (default)
  kReducedActivations,  // activations rounded as llama.cpp does: bf16 (round-to-nearest-even) for BF16
                        // weights, 8-bit blocks (Q8_0's rule) for Q8_0 and Q4_0 weights; f32
                        // accumulation
};

// y[t, o] = sum_i x[t, i] * w[o, i] for t < n_tokens, o < w.rows(); x is [n_tokens, w.cols()] and y is
// [n_tokens, w.rows()], both dense row-major. Work is split over output rows across the pool. Weights
// must be F32, F16, BF16, Q8_0 or Q4_0 (see kernels/quantize.h; columns a multiple of 32); other dtypes
// throw std::invalid_argument. With kExact, the products are those of x with the f32 value of each stored
// weight (for Q8_0 and Q4_0, d * q exactly), accumulated in f32; activations are never quantized.
// kReducedActivations is a request, not a guarantee: for prefill-sized n_tokens it takes the ~2x faster
// vdpbf16ps kernel for BF16 weights on AVX512_BF16 CPUs, and the vpdpbusd kernel for Q8_0 and Q4_0
// weights on AVX512-VNNI CPUs; it computes exactly (kExact) everywhere else. The vdpbf16ps kernel also
// flushes denormal activations and products to zero, as vdpbf16ps does.
void matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y,
            Precision precision = Precision::kExact);

// The same product with an MLX-quantized matrix, its codes read in place (never dequantized to memory).
// kExact: x times scale * q + bias (affine) or scale * element (fp modes) in f32, summed per group first.
// kReducedActivations, for affine 4/8-bit, nvfp4 and mxfp4 on AVX2 CPUs: activations quantized to 8-bit
// blocks of 32 (Q8_0's rule) and integer dot products, as llama.cpp computes; exact elsewhere.
void matmul(ThreadPool& pool, const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y,
            Precision precision = Precision::kExact);

// The same products without SIMD or threads: the references every SIMD kernel is tested against.
void matmul_reference(const Tensor& w, const float* x, int64_t n_tokens, float* y);
void matmul_reference(const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y);

// Name of the Highway target that matmul() dispatches to on this CPU (e.g. "AVX3", "AVX2").
const char* matmul_target();

}  // namespace ge::kernels
