// Matrix products of f32 activations with weights stored in any supported dtype. Weights are read in
// their stored format (bf16/f16 widened, Q8_0/Q4_0 blocks and MLX codes dequantized in registers), never
// copied to f32 first.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "kernels/mlx_quant.h"
#include "kernels/thread_pool.h"
#include "tensor/tensor.h"

namespace ge::kernels {

enum class Precision {
  kExact,            // f32 activations, f32 accumulation (default)
  kReducedActivations,  // activations rounded as llama.cpp does: bf16 (round-to-nearest-even) for BF16
                        // weights, 8-bit blocks (Q8_0's rule) for Q8_0 and Q4_0 weights and for
                        // RepackedMatrix; f32 accumulation
};

// y[t, o] = sum_i x[t, i] * w[o, i] for t < n_tokens, o < w.rows(); x is [n_tokens, w.cols()] and y is
// [n_tokens, w.rows()], both dense row-major. Work is split over output rows across the pool; exact
// products of F32, F16 and BF16 weights with many tokens (detail::min_gemm_tokens) go through gemm()
// (kernels/gemm.h), which first widens the weights into f32 panels. Weights
// must be F32, F16, BF16, Q8_0 or Q4_0 (see kernels/quantize.h; columns a multiple of 32); other dtypes
// throw std::invalid_argument. With kExact, the products are those of x with the f32 value of each stored
// weight (for Q8_0 and Q4_0, d * q exactly), accumulated in f32; activations are never quantized.
// kReducedActivations is a request, not a guarantee: for prefill-sized n_tokens it takes the ~2x faster
// vdpbf16ps kernel for BF16 weights on AVX512_BF16 CPUs, and the vpdpbusd kernel for Q8_0 and Q4_0
// weights on AVX512-VNNI CPUs; it computes exactly (kExact) everywhere else. The vdpbf16ps kernel also
// flushes denormal activations and products to zero, as vdpbf16ps does.
void matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y,
            Precision precision = Precision::kExact);

// The same product with an MLX-quantized matrix, its codes read in place (never dequantized to memory):
// x times scale * q + bias (affine) or scale * element (fp modes) in f32, summed per group first.
void matmul(ThreadPool& pool, const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y);

// An MLX-quantized matrix (affine 4 or 8-bit, nvfp4, mxfp4) repacked once for the integer kernels of
// Precision::kReducedActivations: rows interleaved 8 at a time so that one vpmaddubsw multiplies 8 rows,
// scales and affine offsets widened to f32 (see matmul_mlx_avx2.cpp). Owns its bytes: about the size of
// the codes, plus 4-8 bytes of scales and offsets per group and row.
class RepackedMatrix {
 public:
  // nullopt where the kernels do not apply: other modes or bit widths, or a CPU without AVX2.
  static std::optional<RepackedMatrix> repack(const QuantizedMatrix& m);

  const QuantParams& params() const { return params_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t unit() const { return unit_; }  // activation values per scale
  const std::byte* codes() const { return codes_.data(); }
  const float* scales() const { return scales_.data(); }
  const float* offsets() const { return offsets_.empty() ? nullptr : offsets_.data(); }
  size_t bytes() const { return codes_.size() + (scales_.size() + offsets_.size()) * sizeof(float); }

 private:
  QuantParams params_;
  int64_t rows_ = 0, cols_ = 0, unit_ = 0;
  std::vector<std::byte> codes_;
  std::vector<float> scales_, offsets_;
};

// y = x w^T with x's rows quantized to 8-bit blocks (one per 4-bit group, or per 32 values for 8-bit
// codes: d = max|x| / 127, codes round(x / d)) and integer dot products, as llama.cpp computes; the affine
// offset bias * sum(x) takes the exact sums of x.
void matmul(ThreadPool& pool, const RepackedMatrix& w, const float* x, int64_t n_tokens, float* y);

// The same products without SIMD or threads: the references every SIMD kernel is tested against.
void matmul_reference(const Tensor& w, const float* x, int64_t n_tokens, float* y);
void matmul_reference(const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y);

// Name of the Highway target that matmul() dispatches to on this CPU (e.g. "AVX3", "AVX2").
const char* matmul_target();

}  // namespace ge::kernels
