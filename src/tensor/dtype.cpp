#include "tensor/dtype.h"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ge {

namespace {
constexpr std::array<DTypeInfo, 18> kInfo{{
    {"F32", 1, 4},
    {"F16", 1, 2},
    {"BF16", 1, 2},
    {"I32", 1, 4},
    {"U8", 1, 1},
    {"U32", 1, 4},
    {"Q8_0", 32, 34},  // fp16 scale + 32 int8
    {"Q4_0", 32, 18},  // fp16 scale + 16 bytes of nibbles
    {"Q4_1", 32, 20},
    {"Q5_0", 32, 22},
    {"Q5_1", 32, 24},
    {"Q2_K", 256, 84},
    {"Q3_K", 256, 110},
    {"Q4_K", 256, 144},
    {"Q5_K", 256, 176},
    {"Q6_K", 256, 210},
    {"IQ4_NL", 32, 18},
    {"IQ4_XS", 256, 136},
}};
}  // namespace

const DTypeInfo& dtype_info(DType t) {
  return kInfo[static_cast<size_t>(t)];
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  if (name == "F32") return DType::F32;
  if (name == "F16") return DType::F16;
  if (name == "BF16") return DType::BF16;
  if (name == "I32") return DType::I32;
  // MLX writes its fp scale codes as U8; other writers label them F8_E4M3 / F8_E8M0, which MLX reads
  // as U8 too.
  if (name == "U8" || name == "F8_E4M3" || name == "F8_E8M0") return DType::U8;
  if (name == "U32") return DType::U32;
  return std::nullopt;
}

std::optional<size_t> dtype_bytes(DType t, int64_t n) {
  const DTypeInfo& i = dtype_info(t);
  size_t bytes = 0;
  if (n < 0 || n % i.block_elems != 0 ||
      __builtin_mul_overflow(static_cast<size_t>(n / i.block_elems), static_cast<size_t>(i.block_bytes), &bytes))
    return std::nullopt;
  return bytes;
}

// By hand rather than through _Float16, which GCC converts with a libgcc call (__extendhfsf2: 10% of the
// time of repacking a Q4_0 model at load).
float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f,
                 mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | mantissa << 13;  // inf, NaN
  } else if (exponent != 0) {
    bits = sign | (exponent + 112) << 23 | mantissa << 13;
  } else {
    const float subnormal = static_cast<float>(mantissa) * 0x1p-24f;  // exact: at most 10 significant bits
    std::memcpy(&bits, &subnormal, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest, ties to even, by hand: clang 14 (the fuzz build's compiler) has no _Float16 on x86. Equal
// to GCC's _Float16 conversion for all 2^32 inputs (NaNs quiet, keeping the payload's top bits).
uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((a >> 13) & 0x3ffu);  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // from 65520 on: infinity
  if (a >= 0x38800000u) {                       // normal: rebias the exponent, round the 13 dropped bits
    const uint32_t m = a - 0x38000000u;
    return sign | static_cast<uint16_t>((m + 0xfffu + ((m >> 13) & 1u)) >> 13);
  }
  if (a < 0x33000000u) return sign;  // below 2^-25: zero
  // Subnormal: the significand in units of 2^-24.
  const uint32_t shift = 126 - (a >> 23), significand = (a & 0x7fffffu) | 0x800000u;
  const uint32_t half = 1u << (shift - 1), rest = significand & ((1u << shift) - 1);
  uint32_t q = significand >> shift;
  if (rest > half || (rest == half && (q & 1u))) ++q;
  return sign | static_cast<uint16_t>(q);
}

namespace {

// Whether any of the n words at `data` has every exponent bit set (an infinity or a NaN in its float format).
template <typename Word>
std::optional<size_t> first_all_ones_exponent(const std::byte* data, size_t n, Word exponent) {
  for (size_t i = 0; i < n; ++i) {
    Word w;
    __builtin_memcpy(&w, data + i * sizeof(Word), sizeof(Word));
    if ((w & exponent) == exponent) return i;
  }
  return std::nullopt;
}

}  // namespace

std::optional<size_t> first_non_finite(DType t, const std::byte* data, size_t n) {
  switch (t) {
    case DType::F32:
      return first_all_ones_exponent<uint32_t>(data, n, 0x7f800000u);
    case DType::F16:
      return first_all_ones_exponent<uint16_t>(data, n, 0x7c00);
    case DType::BF16:
      return first_all_ones_exponent<uint16_t>(data, n, 0x7f80);
    default:
      return std::nullopt;
  }
}

void require_finite(std::string_view origin, std::string_view tensor, DType t, const std::byte* data, size_t n,
                    size_t first_element) {
  const auto at = first_non_finite(t, data, n);
  if (!at) return;
  throw std::runtime_error((origin.empty() ? "" : std::string(origin) + ": ") + "tensor '" + std::string(tensor) +
                           "' holds a NaN or infinite value (element " + std::to_string(first_element + *at) +
                           "): the checkpoint is damaged");
}

}  // namespace ge
