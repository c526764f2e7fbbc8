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

// A quantized matrix repacked once for the integer kernels of Precision::kReducedActivations: MLX affine
// 4/8-bit, nvfp4 and mxfp4 matrices, and every ggml block type. Rows are interleaved 8 at a time so that one
// vpmaddubsw multiplies 8 rows; each unit of values shares one scale per row (fp16 where the format's
// scales are fp16, else f32), each group one f32 offset per row where the format has minimums, and a zero
// point common to the matrix is taken out in integers (see matmul_repacked_avx2.cpp). Owns its bytes: the
// codes at 4 or 8 bits a value, plus 2-8 bytes of scale and offset per unit and row.
class RepackedMatrix {
 public:
  // How a code becomes the value its scale multiplies.
  enum class Codes : uint8_t {
    kNibbles,      // 4-bit, the unsigned code itself (MLX affine 4-bit; Q4_0, Q4_1, Q4_K)
    kFp4Nibbles,   // 4-bit E2M1 (nvfp4, mxfp4)
    kIq4Nibbles,   // 4-bit index into kIq4Values (IQ4_NL, IQ4_XS)
    kSignedBytes,  // int8 (MLX 8-bit as q - 128; Q8_0)
    kSmallBytes,   // 8-bit holding an unsigned code below 64 (Q5_0, Q5_1, Q5_K, Q6_K, Q2_K, Q3_K)
  };

  // nullopt where the kernels do not apply: other modes or bit widths, or a CPU without AVX2.
  static std::optional<RepackedMatrix> repack(const QuantizedMatrix& m);
  // A ggml block-quantized tensor (any type is_ggml_block accepts); nullopt for other dtypes or no AVX2.
  static std::optional<RepackedMatrix> repack(const Tensor& w);

  Codes codes_kind() const { return codes_kind_; }
  int bits() const { return codes_kind_ == Codes::kSignedBytes || codes_kind_ == Codes::kSmallBytes ? 8 : 4; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t unit() const { return unit_; }    // activation values per scale
  int64_t group() const { return group_; }  // activation values per offset (a multiple of unit)
  int32_t zero_point() const { return zero_point_; }  // value = scale * (code - zero_point) (+ offset)
  const std::byte* codes() const { return codes_.data(); }
  bool half_scales() const { return !scales16_.empty(); }
  const float* scales() const { return scales_.data(); }
  const uint16_t* half_scale_bits() const { return scales16_.data(); }
  const float* offsets() const { return offsets_.empty() ? nullptr : offsets_.data(); }
  size_t bytes() const {
    return codes_.size() + scales16_.size() * 2 + (scales_.size() + offsets_.size()) * sizeof(float);
  }

 private:
  // What build() needs to know of a format besides its rows' codes.
  struct Layout {
    Codes kind;
    int64_t unit, group;
    int32_t zero_point;
    bool half_scales, offsets;
  };
  template <class RowCodes>
  static RepackedMatrix build(const Layout& layout, int64_t rows, int64_t cols, RowCodes&& row_codes);

  Codes codes_kind_ = Codes::kNibbles;
  int64_t rows_ = 0, cols_ = 0, unit_ = 0, group_ = 0;
  int32_t zero_point_ = 0;
  std::vector<std::byte> codes_;
  std::vector<uint16_t> scales16_;
  std::vector<float> scales_, offsets_;
};

// y = x w^T with x's rows quantized to 8-bit blocks of w.unit() values (d = max|x| / 127, codes round(x / d))
// and integer dot products, as llama.cpp computes (the offset term multiplies the sums of the rounded
// activations, so that the result is exactly the product of the rounded activations with the weights).
void matmul(ThreadPool& pool, const RepackedMatrix& w, const float* x, int64_t n_tokens, float* y);

// Whether matmul(pool, w, ..., kReducedActivations) has a kernel of its own for n_tokens tokens of this
// weight on this CPU (vdpbf16ps for BF16, vpdpbusd for Q8_0/Q4_0), which then beats a RepackedMatrix.
bool has_reduced_kernel(const Tensor& w, int64_t n_tokens);

// The same products without SIMD or threads: the references every SIMD kernel is tested against.
void matmul_reference(const Tensor& w, const float* x, int64_t n_tokens, float* y);
void matmul_reference(const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y);

// Name of the Highway target that matmul() dispatches to on this CPU (e.g. "AVX3", "AVX2").
const char* matmul_target();

}  // namespace ge::kernels
