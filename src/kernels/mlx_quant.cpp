#include "kernels/mlx_quant.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace ge::kernels {

namespace {

constexpr std::array<float, 8> kE2M1Magnitudes = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

void store_float(float v, DType dtype, std::byte* p, int64_t i) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(p + i * 4, &v, 4);
      return;
    case DType::F16: {
      const uint16_t h = f32_to_f16(v);
      std::memcpy(p + i * 2, &h, 2);
      return;
    }
    case DType::BF16: {
      const uint16_t h = f32_to_bf16(v);
      std::memcpy(p + i * 2, &h, 2);
      return;
    }
    default:
      throw std::invalid_argument("quantize_row: scales must be F32, F16 or BF16");
  }
}

// Sets code i of a zeroed bit stream.
void pack_code(std::byte* row, int64_t i, int bits, uint32_t code) {
  const uint64_t bit = static_cast<uint64_t>(i) * static_cast<uint64_t>(bits);
  auto* b = reinterpret_cast<uint8_t*>(row) + bit / 8;
  const uint32_t shifted = code << (bit % 8);
  b[0] |= static_cast<uint8_t>(shifted);
  if (bit % 8 + static_cast<uint64_t>(bits) > 8) b[1] |= static_cast<uint8_t>(shifted >> 8);
}

// fast::Quantize on the CPU (mlx/backend/cpu/quantized.cpp): the edge of larger magnitude becomes the
// bias, exactly representable (code 0); the codes use the f32 scale, the stored one is rounded to the
// weight's type.
void quantize_affine_group(const float* w, int group, int bits, DType dtype, int64_t first, std::byte* codes,
                           std::byte* scales, std::byte* biases, int64_t g) {
  const float n_bins = static_cast<float>((1 << bits) - 1);
  float w_min = std::numeric_limits<float>::infinity(), w_max = -w_min;
  for (int j = 0; j < group; ++j) {
    w_max = std::max(w_max, w[j]);
    w_min = std::min(w_min, w[j]);
  }
  const bool min_is_edge = std::abs(w_min) > std::abs(w_max);
  float scale = std::max((w_max - w_min) / n_bins, 1e-7f);
  scale = min_is_edge ? scale : -scale;
  const float edge = min_is_edge ? w_min : w_max;
  const float q0 = std::rint(edge / scale);
  float bias = 0;
  if (q0 != 0) {
    scale = edge / q0;
    bias = edge;
  }
  for (int j = 0; j < group; ++j) {
    const float q = std::min(std::max(std::rint((w[j] - bias) / scale), 0.0f), n_bins);
    pack_code(codes, first + j, bits, static_cast<uint32_t>(q));
  }
  store_float(scale, dtype, scales, g);
  store_float(bias, dtype, biases, g);
}

// fp_quantize on the GPU (mlx/backend/metal/kernels/fp_quantized.h), in f32: the scale maps the group's
// largest magnitude to the element format's largest value, is rounded to its 8-bit format, and each
// element is encoded after multiplying by the rounded scale's reciprocal.
void quantize_fp_group(const float* w, const QuantParams& p, int64_t first, std::byte* codes, std::byte* scales,
                       int64_t g) {
  float amax = 0;
  for (int j = 0; j < p.group_size; ++j) amax = std::max(amax, std::abs(w[j]));
  const float wanted = amax / (p.bits == 4 ? 6.0f : 448.0f);
  const uint8_t scale_code = p.mode == QuantMode::kNvfp4 ? f32_to_e4m3(wanted) : f32_to_e8m0(wanted);
  const float scale = p.mode == QuantMode::kNvfp4 ? e4m3_to_f32(scale_code) : e8m0_to_f32(scale_code);
  const float inverse = scale == 0 ? 0.0f : 1.0f / scale;
  for (int j = 0; j < p.group_size; ++j) {
    const float x = w[j] * inverse;
    pack_code(codes, first + j, p.bits, p.bits == 4 ? f32_to_e2m1(x) : f32_to_e4m3(x));
  }
  scales[g] = static_cast<std::byte>(scale_code);
}

}  // namespace

std::string_view quant_mode_name(QuantMode mode) {
  switch (mode) {
    case QuantMode::kAffine:
      return "affine";
    case QuantMode::kNvfp4:
      return "nvfp4";
    case QuantMode::kMxfp4:
      return "mxfp4";
    case QuantMode::kMxfp8:
      return "mxfp8";
  }
  return "?";
}

std::optional<QuantMode> parse_quant_mode(std::string_view name) {
  for (QuantMode m : {QuantMode::kAffine, QuantMode::kNvfp4, QuantMode::kMxfp4, QuantMode::kMxfp8})
    if (quant_mode_name(m) == name) return m;
  return std::nullopt;
}

QuantParams default_quant_params(QuantMode mode) {
  switch (mode) {
    case QuantMode::kNvfp4:
      return {mode, 4, 16};
    case QuantMode::kMxfp4:
      return {mode, 4, 32};
    case QuantMode::kMxfp8:
      return {mode, 8, 32};
    default:
      return {QuantMode::kAffine, 4, 64};
  }
}

std::string quant_params_error(const QuantParams& p) {
  if (p.mode == QuantMode::kAffine) {
    if (p.group_size != 32 && p.group_size != 64 && p.group_size != 128)
      return "affine group size " + std::to_string(p.group_size) + " is not supported (32, 64 or 128)";
    if (p.bits < 2 || p.bits > 8 || p.bits == 7)
      return "affine bits " + std::to_string(p.bits) + " is not supported (2, 3, 4, 5, 6 or 8)";
    return {};
  }
  const QuantParams fixed = default_quant_params(p.mode);
  const std::string mode(quant_mode_name(p.mode));
  if (p.group_size != fixed.group_size)
    return mode + " requires group size " + std::to_string(fixed.group_size) + ", not " +
           std::to_string(p.group_size);
  if (p.bits != fixed.bits)
    return mode + " requires " + std::to_string(fixed.bits) + " bits, not " + std::to_string(p.bits);
  return {};
}

std::string describe(const QuantParams& p) {
  return std::string(quant_mode_name(p.mode)) + " " + std::to_string(p.bits) + "-bit g" +
         std::to_string(p.group_size);
}

float e2m1_to_f32(uint8_t code) {
  const float m = kE2M1Magnitudes[code & 7];
  return code & 8 ? -m : m;
}

uint8_t f32_to_e2m1(float x) {
  if (std::isnan(x)) return 0x7;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  x = std::abs(x);
  // MLX's threshold chain (> 5 -> 7, >= 3.5 -> 6, ... > 0.25 -> 1) as a count of the thresholds passed:
  // the same codes without a data-dependent branch per weight (nvfp4 quantization 2x faster).
  const int bits = (x > 0.25f) + (x >= 0.75f) + (x > 1.25f) + (x >= 1.75f) + (x > 2.5f) + (x >= 3.5f) + (x > 5.0f);
  return static_cast<uint8_t>(bits) | sign;
}

// MLX's decoder: the 7 magnitude bits shifted into an fp16's exponent and mantissa, times 2^8.
float e4m3_to_f32(uint8_t code) {
  const float m = f16_to_f32(static_cast<uint16_t>((code & 127) << 7)) * 256.0f;
  return code & 128 ? -m : m;
}

// PyTorch's round-to-nearest-even conversion as MLX uses it, saturating inputs >= 480 to 448.
uint8_t f32_to_e4m3(float x) {
  constexpr uint32_t kMax = 543u << 21, kDenormMask = 141u << 23;
  uint32_t f = std::bit_cast<uint32_t>(x);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint8_t bits;
  if (f >= kMax) {
    bits = 0x7E;
  } else if (f < (121u << 23)) {
    f = std::bit_cast<uint32_t>(std::bit_cast<float>(f) + std::bit_cast<float>(kDenormMask));
    bits = static_cast<uint8_t>(f - kDenormMask);
  } else {
    const uint32_t mant_odd = (f >> 20) & 1;
    f += (static_cast<uint32_t>(7 - 127) << 23) + 0x7FFFF;
    f += mant_odd;
    bits = static_cast<uint8_t>(f >> 20);
  }
  return bits | static_cast<uint8_t>(sign >> 24);
}

float e8m0_to_f32(uint8_t code) {
  return std::bit_cast<float>(code == 0 ? 0x400000u : static_cast<uint32_t>(code) << 23);
}

uint8_t f32_to_e8m0(float x) {
  if (!std::isfinite(x)) return 0xFF;
  if (x <= 0.0f) return 0;  // log2(0) = -inf clamps to -127 in MLX's kernel
  const int n = std::clamp(static_cast<int>(std::round(std::log2(x))), -127, 127);
  return static_cast<uint8_t>(n + 127);
}

const float* scale_table(QuantMode mode) {
  static const auto tables = [] {
    std::array<std::array<float, 256>, 2> t{};
    for (int c = 0; c < 256; ++c) {
      t[0][c] = e4m3_to_f32(static_cast<uint8_t>(c));
      t[1][c] = e8m0_to_f32(static_cast<uint8_t>(c));
    }
    return t;
  }();
  if (mode == QuantMode::kAffine) return nullptr;
  return mode == QuantMode::kNvfp4 ? tables[0].data() : tables[1].data();
}

float load_float(const std::byte* p, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::F32: {
      float v;
      std::memcpy(&v, p + i * 4, 4);
      return v;
    }
    case DType::F16:
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + i * 2, 2);
      return dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
    default:
      throw std::invalid_argument("load_float: not a float dtype");
  }
}

void quantize_row(const QuantParams& p, const float* w, int64_t n, DType scale_dtype, std::byte* codes,
                  std::byte* scales, std::byte* biases) {
  if (const std::string error = quant_params_error(p); !error.empty()) throw std::invalid_argument(error);
  if (n % p.group_size != 0)
    throw std::invalid_argument("quantize_row: " + std::to_string(n) + " values are not whole groups of " +
                                std::to_string(p.group_size));
  std::memset(codes, 0, static_cast<size_t>(n * p.bits / 8));
  for (int64_t g = 0; g < n / p.group_size; ++g) {
    const int64_t first = g * p.group_size;
    if (p.mode == QuantMode::kAffine)
      quantize_affine_group(w + first, p.group_size, p.bits, scale_dtype, first, codes, scales, biases, g);
    else
      quantize_fp_group(w + first, p, first, codes, scales, g);
  }
}

void dequantize_row(const QuantizedMatrix& m, int64_t row, float* out) {
  const QuantParams& p = m.params;
  const std::byte* codes = m.codes + static_cast<size_t>(row) * m.code_row_bytes();
  const std::byte* scales = m.scales + static_cast<size_t>(row) * m.scale_row_bytes();
  const std::byte* biases = m.biases ? m.biases + static_cast<size_t>(row) * m.scale_row_bytes() : nullptr;
  for (int64_t g = 0; g < m.groups(); ++g) {
    const int64_t first = g * p.group_size;
    if (p.mode == QuantMode::kAffine) {
      const float scale = load_float(scales, m.scale_dtype, g), bias = load_float(biases, m.scale_dtype, g);
      for (int64_t j = first; j < first + p.group_size; ++j)
        out[j] = scale * static_cast<float>(unpack_code(codes, j, p.bits)) + bias;
      continue;
    }
    const auto scale_code = static_cast<uint8_t>(scales[g]);
    const float scale = p.mode == QuantMode::kNvfp4 ? e4m3_to_f32(scale_code) : e8m0_to_f32(scale_code);
    for (int64_t j = first; j < first + p.group_size; ++j) {
      const auto code = static_cast<uint8_t>(unpack_code(codes, j, p.bits));
      out[j] = scale * (p.bits == 4 ? e2m1_to_f32(code) : e4m3_to_f32(code));
    }
  }
}

}  // namespace ge::kernels
