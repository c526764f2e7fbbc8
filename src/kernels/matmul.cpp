#include "kernels/matmul.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/matmul_internal.h"
#include "tensor/dtype.h"

namespace ge::kernels {
namespace {

void check_supported(const Tensor& w) {
  if (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16)
    throw std::invalid_argument("matmul: unsupported weight dtype " + std::string(dtype_info(w.dtype).name) +
                                " for " + w.name);
}

float weight_at(const Tensor& w, int64_t row, int64_t col) {
  const std::byte* p = w.row(row);
  switch (w.dtype) {
    case DType::F32: {
      float v;
      std::memcpy(&v, p + col * 4, 4);
      return v;
    }
    case DType::F16:
    case DType::BF16: {
      uint16_t bits;
      std::memcpy(&bits, p + col * 2, 2);
      return w.dtype == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
    default:
      throw std::logic_error("weight_at: unchecked dtype");
  }
}

}  // namespace

void matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y,
            Precision precision) {
  check_supported(w);
  if (n_tokens <= 0 || w.rows() == 0) return;
  if (precision == Precision::kBf16Activations && w.dtype == DType::BF16 &&
      n_tokens >= detail::kMinBf16Tokens && detail::cpu_has_avx512bf16())
    return detail::matmul_avx512bf16(pool, w, x, n_tokens, y);
  // The default stays exact: bf16 activations move the logits ~5e-3, past the 1e-3 bar. An exact-enough
  // vdpbf16ps variant (x split into bf16 hi + lo parts) measured no faster on Zen 4 (two vdpbf16ps per 32
  // products is the same instruction count as two FMAs), so it was removed.
  detail::matmul_highway(pool, w, x, n_tokens, y);
}

void matmul_reference(const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  check_supported(w);
  const int64_t rows = w.rows(), cols = w.cols();
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t o = 0; o < rows; ++o) {
      double sum = 0;
      for (int64_t i = 0; i < cols; ++i) sum += static_cast<double>(x[t * cols + i]) * weight_at(w, o, i);
      y[t * rows + o] = static_cast<float>(sum);
    }
  }
}

const char* matmul_target() {
  return detail::highway_target_name();
}

}  // namespace ge::kernels
