#include "kernels/matmul.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/matmul_internal.h"
#include "kernels/ops.h"
#include "tensor/dtype.h"

namespace ge::kernels {
namespace {

void check_supported(const Tensor& w) {
  if (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16 && !is_ggml_block(w.dtype))
    throw std::invalid_argument("matmul: unsupported weight dtype " + std::string(dtype_info(w.dtype).name) +
                                " for " + w.name);
  // The kernels read quantized rows block by block; a partial block would mean a malformed tensor.
  if (is_ggml_block(w.dtype) && w.cols() % dtype_info(w.dtype).block_elems != 0)
    throw std::invalid_argument("matmul: " + w.name + " has " + std::to_string(w.cols()) +
                                " columns, not a whole number of " + std::string(dtype_info(w.dtype).name) +
                                " blocks");
}

// y = x W^T in double, W's rows given as f32 by row_values(row, out).
template <class RowValues>
void reference_product(int64_t rows, int64_t cols, RowValues row_values, const float* x, int64_t n_tokens,
                       float* y) {
  std::vector<float> weights(static_cast<size_t>(cols));
  for (int64_t o = 0; o < rows; ++o) {
    row_values(o, weights.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0;
      for (int64_t i = 0; i < cols; ++i) sum += static_cast<double>(x[t * cols + i]) * weights[i];
      y[t * rows + o] = static_cast<float>(sum);
    }
  }
}

}  // namespace

bool has_reduced_kernel(const Tensor& w, int64_t n_tokens) {
  if (w.dtype == DType::BF16) return n_tokens >= detail::kMinBf16Tokens && detail::cpu_has_avx512bf16();
  if (w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0)
    return n_tokens >= detail::kMinVnniTokens && detail::cpu_has_avx512vnni();
  return false;
}

void matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y,
            Precision precision) {
  check_supported(w);
  if (n_tokens <= 0 || w.rows() == 0) return;
  if (precision == Precision::kReducedActivations && has_reduced_kernel(w, n_tokens))
    return w.dtype == DType::BF16 ? detail::matmul_avx512bf16(pool, w, x, n_tokens, y)
                                  : detail::matmul_vnni(pool, w, x, n_tokens, y);
  // kExact stays exact: bf16 activations move the logits ~5e-3, past the 1e-3 bar. An exact-enough
  // vdpbf16ps variant (x split into bf16 hi + lo parts) measured no faster on Zen 4 (two vdpbf16ps per 32
  // products is the same instruction count as two FMAs), so it was removed.
  if (!is_ggml_block(w.dtype) && n_tokens >= detail::min_gemm_tokens(w.dtype))
    return gemm(pool, x, w.cols(), n_tokens, MatrixView{w.data, w.dtype, w.rows(), w.cols(), w.cols()},
                /*w_k_major=*/false, y, w.rows());
  detail::matmul_highway(pool, w, x, n_tokens, y);
}

void matmul(ThreadPool& pool, const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y) {
  if (n_tokens <= 0 || w.rows == 0) return;
  detail::matmul_highway_mlx(pool, w, x, n_tokens, y);
}

void matmul_reference(const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  check_supported(w);
  reference_product(
      w.rows(), w.cols(), [&](int64_t row, float* out) { dequantize_row(w, row, 1.0f, out); }, x, n_tokens,
      y);
}

void matmul_reference(const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y) {
  reference_product(
      w.rows, w.cols, [&](int64_t row, float* out) { dequantize_row(w, row, out); }, x, n_tokens, y);
}

const char* matmul_target() {
  return detail::highway_target_name();
}

}  // namespace ge::kernels
