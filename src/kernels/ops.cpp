#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/ggml_blocks.h"

namespace ge::kernels {

namespace {

// Values read with memcpy: a safetensors file need not align its data (the format asks nothing of a header's
// length), and a typed read of a misaligned value is undefined.
template <typename T, typename ToFloat>
void widen_as(const std::byte* data, int64_t first, int64_t n, float scale, float* out, ToFloat to_float) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, data + static_cast<size_t>(first + i) * sizeof(T), sizeof(T));
    out[i] = to_float(v) * scale;
  }
}

void widen(const Tensor& t, int64_t first, int64_t n, float scale, float* out) {
  switch (t.dtype) {
    case DType::F32:
      return widen_as<float>(t.data, first, n, scale, out, [](float v) { return v; });
    case DType::BF16:
      return widen_as<uint16_t>(t.data, first, n, scale, out, bf16_to_f32);
    case DType::F16:
      return widen_as<uint16_t>(t.data, first, n, scale, out, f16_to_f32);
    default:
      throw std::runtime_error(t.name + ": dtype " + std::string(dtype_info(t.dtype).name) + " not supported here");
  }
}

}  // namespace

void dequantize_row(const Tensor& t, int64_t row, float scale, float* out) {
  const int64_t n = t.cols();
  if (!is_ggml_block(t.dtype)) return widen(t, row * n, n, scale, out);
  dequantize_blocks(t.dtype, t.row(row), n, out);
  for (int64_t i = 0; i < n; ++i) out[i] *= scale;
}

namespace {

// out = x / sqrt(mean(x^2) + eps) * gain (gain null: 1), per row; the sum of squares in double.
void scaled_rms_norm(const float* x, const float* gain, float eps, int64_t rows, int64_t n, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    if (gain)
      for (int64_t i = 0; i < n; ++i) o[i] = xr[i] * inv * gain[i];
    else
      for (int64_t i = 0; i < n; ++i) o[i] = xr[i] * inv;
  }
}

}  // namespace

void rms_norm(const float* x, const Tensor& w, float eps, bool one_plus, int64_t rows, int64_t n,
              float* out) {
  // The gain vector is tiny (n <= a few thousand): widen it once per call on the stack.
  constexpr int64_t kMaxN = 16384;
  if (n > kMaxN || w.numel() != n) throw std::runtime_error(w.name + ": norm size mismatch");
  float gain[kMaxN];
  widen(w, 0, n, 1.0f, gain);
  if (one_plus)
    for (int64_t i = 0; i < n; ++i) gain[i] += 1.0f;
  scaled_rms_norm(x, gain, eps, rows, n, out);
}

void rms_norm_unscaled(const float* x, float eps, int64_t rows, int64_t n, float* out) {
  scaled_rms_norm(x, nullptr, eps, rows, n, out);
}

void layer_norm(const float* x, const Tensor& w, const Tensor& b, float eps, int64_t rows, int64_t n,
                float* out) {
  constexpr int64_t kMaxN = 16384;
  if (n > kMaxN || w.numel() != n || b.numel() != n) throw std::runtime_error(w.name + ": norm size mismatch");
  float gain[kMaxN], shift[kMaxN];
  widen(w, 0, n, 1.0f, gain);
  widen(b, 0, n, 1.0f, shift);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    // Two passes in double: the mean of SigLIP's activations is large next to their spread.
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(n);
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>((xr[i] - mean) * inv) * gain[i] + shift[i];
  }
}

void add_inplace(float* out, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += x[i];
}

void rope_neox(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* a = x + h * head_dim;
    float* b = a + half;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = a[i], x2 = b[i];
      a[i] = x1 * cos[i] - x2 * sin[i];
      b[i] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

}  // namespace ge::kernels
