// MLX's quantized matrix formats, as mx.quantize writes them (../shared/MLX_QUANT.md):
//   affine  2, 3, 4, 5, 6 or 8-bit unsigned codes q, groups of 32/64/128, w = scale * q + bias, scale
//           and bias stored in the weight's float type (scales may be negative);
//   nvfp4   E2M1 codes, groups of 16, one E4M3 scale per group;
//   mxfp4   E2M1 codes, groups of 32, one E8M0 (power of two) scale per group;
//   mxfp8   E4M3 codes, groups of 32, one E8M0 scale per group.
// Codes are packed least significant bits first into one bit stream per row (for 2, 4 and 8 bits that is
// 32 / bits codes per uint32; 3, 5 and 6-bit codes straddle words). Groups run along the last axis.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tensor/dtype.h"

namespace ge::kernels {

enum class QuantMode : uint8_t { kAffine, kNvfp4, kMxfp4, kMxfp8 };

struct QuantParams {
  QuantMode mode = QuantMode::kAffine;
  int bits = 4;
  int group_size = 64;
  bool operator==(const QuantParams&) const = default;
};

std::string_view quant_mode_name(QuantMode mode);  // "affine", "nvfp4", ...
std::optional<QuantMode> parse_quant_mode(std::string_view name);
// mlx-lm's defaults: affine 4-bit g64, nvfp4 4-bit g16, mxfp4 4-bit g32, mxfp8 8-bit g32.
QuantParams default_quant_params(QuantMode mode);
// Empty when mx.quantize accepts these parameters, else the reason (as mx.quantize words it).
std::string quant_params_error(const QuantParams& p);
std::string describe(const QuantParams& p);  // "affine 4-bit g64"

// Only affine groups have a bias.
inline bool has_biases(const QuantParams& p) { return p.mode == QuantMode::kAffine; }

// A [rows, cols] matrix as mx.quantize stores it (views of bytes that live elsewhere).
struct QuantizedMatrix {
  std::string name;  // for messages
  QuantParams params;
  int64_t rows = 0, cols = 0;
  const std::byte* codes = nullptr;   // rows x code_row_bytes()
  const std::byte* scales = nullptr;  // [rows, groups()] of scale_dtype
  const std::byte* biases = nullptr;  // affine only: like scales
  DType scale_dtype = DType::BF16;    // F32/F16/BF16 (affine) or U8 (E4M3 / E8M0 codes)

  int64_t groups() const { return cols / params.group_size; }
  size_t code_row_bytes() const { return static_cast<size_t>(cols * params.bits / 8); }
  size_t scale_row_bytes() const {
    return static_cast<size_t>(groups()) * (scale_dtype == DType::F32 ? 4 : scale_dtype == DType::U8 ? 1 : 2);
  }
};

// Element and scale codes of the fp modes, as MLX encodes and decodes them.
float e2m1_to_f32(uint8_t code);  // 4-bit: sign, 2 exponent bits, 1 mantissa bit
uint8_t f32_to_e2m1(float x);     // round half to even, saturating at 6
float e4m3_to_f32(uint8_t code);  // no NaN: 0x7F decodes to 480, as in MLX
uint8_t f32_to_e4m3(float x);     // round to nearest even, saturating at 448 (0x7E)
float e8m0_to_f32(uint8_t code);  // 2^(code - 127); 0 -> 2^-127, 0xFF -> inf
uint8_t f32_to_e8m0(float x);     // round(log2(x)) clamped to [-127, 127], + 127

// Quantizes one row of n values (n a multiple of the group size) exactly as MLX does on the CPU (affine:
// the f32 scale and bias of `fast::Quantize`, rounded half to even) and on the GPU (fp modes, the only
// kernels MLX has for them): writes n * bits / 8 code bytes, n / group scales as `scale_dtype` (F32, F16 or
// BF16, the weight's type, for affine; ignored for fp modes, whose scales are U8) and, for affine, as
// many biases.
void quantize_row(const QuantParams& p, const float* w, int64_t n, DType scale_dtype, std::byte* codes,
                  std::byte* scales, std::byte* biases);

// Row `row` of m as f32: scale * q + bias (affine) or scale * element (fp modes).
void dequantize_row(const QuantizedMatrix& m, int64_t row, float* out);

// Code i of a packed row (the bit stream rule, for any bit width).
inline uint32_t unpack_code(const std::byte* row, int64_t i, int bits) {
  const uint64_t bit = static_cast<uint64_t>(i) * static_cast<uint64_t>(bits);
  const auto* b = reinterpret_cast<const uint8_t*>(row) + bit / 8;
  const uint32_t window = b[0] | (bit % 8 + static_cast<uint64_t>(bits) > 8 ? uint32_t{b[1]} << 8 : 0u);
  return (window >> (bit % 8)) & ((1u << bits) - 1);
}

// The f32 value of each of the 256 scale codes of an fp mode (E4M3 for nvfp4, E8M0 for mxfp4/mxfp8);
// nullptr for affine, whose scales are floats.
const float* scale_table(QuantMode mode);

// A stored scale or bias (F32/F16/BF16) as f32.
float load_float(const std::byte* p, DType dtype, int64_t i);

}  // namespace ge::kernels
