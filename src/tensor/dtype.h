// Element types of weights and activations, including block-quantized ones, so that every layer above
// can carry a tensor's storage format without knowing how to decode it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ge {

// Q* and IQ4_* are ggml's block formats (see kernels/ggml_blocks.h), named as ggml names them.
enum class DType : uint8_t {
  F32, F16, BF16, I32, U8, U32,
  Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
};

struct DTypeInfo {
  std::string_view name;
  int64_t block_elems;  // elements per block (1 for plain types)
  int64_t block_bytes;  // bytes per block
};

const DTypeInfo& dtype_info(DType t);
// One of ggml's block-quantized formats (Q8_0 ... IQ4_XS).
inline bool is_ggml_block(DType t) { return t >= DType::Q8_0; }
std::optional<DType> dtype_from_safetensors(std::string_view name);

// Bytes taken by n elements; nullopt when n is not a whole number of blocks or the count overflows.
std::optional<size_t> dtype_bytes(DType t, int64_t n);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
// Round to nearest even, as torch does when it casts to bfloat16.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// The index of the first NaN or infinity among the n values at `data`, of a float type (F32, F16, BF16);
// nullopt when every value is finite, or for other types (whose values are not stored as floats).
std::optional<size_t> first_non_finite(DType t, const std::byte* data, size_t n);
// A NaN or an infinity in a checkpoint is damage (no published Gemma has one; quantizing it would poison its block
// or group). Throws std::runtime_error "[ORIGIN: ]tensor 'NAME' holds a NaN or infinite value (element N): the
// checkpoint is damaged" for the first among the n values at `data` (elements numbered from first_element).
void require_finite(std::string_view origin, std::string_view tensor, DType t, const std::byte* data, size_t n,
                    size_t first_element);

}  // namespace ge
