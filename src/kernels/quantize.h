// ggml's Q8_0 and Q4_0 block formats, bit-exact with ggml's reference quantizers
// (quantize_row_q8_0_ref / quantize_row_q4_0_ref), so that a GGUF written here matches what llama.cpp's
// own tools produce from the same f32 values.
//
// Both formats cut a row into blocks of 32 weights, each an fp16 scale d followed by the codes:
//   Q8_0: 34 bytes; 32 int8 codes, x ~= d * q.
//   Q4_0: 18 bytes; 16 bytes of 4-bit codes (byte j: element j in the low nibble, j + 16 in the high),
//         x ~= d * (q - 8).
#pragma once
#include <cstddef>
#include <cstdint>

namespace ge::kernels {

inline constexpr int64_t kQuantBlock = 32;
inline constexpr size_t kQ8_0BlockBytes = 2 + 32, kQ4_0BlockBytes = 2 + 16;

// n must be a multiple of kQuantBlock; out receives n / 32 blocks.
void quantize_row_q8_0(const float* x, int64_t n, std::byte* out);
void quantize_row_q4_0(const float* x, int64_t n, std::byte* out);

// The inverse is kernels::dequantize_blocks (kernels/ggml_blocks.h), shared by every ggml block type.

}  // namespace ge::kernels
