// ggml's block formats written from f32, bit-exact with ggml's reference quantizers (quantize_row_*_ref in
// ggml-quants.c, which llama-quantize runs when it has no importance matrix), so that a GGUF written here
// matches what llama.cpp's own tools produce from the same f32 values. The layouts are in ggml_blocks.h.
//
// The 32-value types: Q8_0, Q4_0 (symmetric, the scale fixed by the block's largest magnitude), Q5_0
// (as Q4_0 with a 5th bit), Q5_1 (affine: scale and minimum from the block's range).
// The K types: 256-value super-blocks of 8 (Q4_K, Q5_K: 32 values each, a scale and a minimum) or 16
// (Q6_K: 16 values, a signed scale) sub-blocks. Each sub-block's scale (and minimum) is searched for
// the least weighted squared error; the super-block stores them as 6-bit (Q4_K/Q5_K) or 8-bit (Q6_K)
// multiples of one fp16 scale (and one fp16 minimum), and the codes are then recomputed with the
// stored, rounded values.
//
// The arithmetic follows ggml's float operations one for one (same order, no fused multiply-adds: this
// file is compiled with -ffp-contract=off), which is what bit-exactness needs.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace ge::kernels {

inline constexpr int64_t kQuantBlock = 32;   // values per block of Q8_0 / Q4_0 / Q5_0 / Q5_1
inline constexpr int64_t kSuperBlock = 256;  // values per block of the K types
inline constexpr size_t kQ8_0BlockBytes = 2 + 32, kQ4_0BlockBytes = 2 + 16;
inline constexpr size_t kQ5_0BlockBytes = 2 + 4 + 16, kQ5_1BlockBytes = 2 + 2 + 4 + 16;
inline constexpr size_t kQ4_KBlockBytes = 2 + 2 + 12 + 128, kQ5_KBlockBytes = 2 + 2 + 12 + 32 + 128;
inline constexpr size_t kQ6_KBlockBytes = 128 + 64 + 16 + 2;

// n must be a multiple of the type's block size (32, or 256 for the K types); out receives n / block
// blocks.
void quantize_row_q8_0(const float* x, int64_t n, std::byte* out);
void quantize_row_q4_0(const float* x, int64_t n, std::byte* out);
void quantize_row_q5_0(const float* x, int64_t n, std::byte* out);
void quantize_row_q5_1(const float* x, int64_t n, std::byte* out);
void quantize_row_q4_k(const float* x, int64_t n, std::byte* out);
void quantize_row_q5_k(const float* x, int64_t n, std::byte* out);
void quantize_row_q6_k(const float* x, int64_t n, std::byte* out);

// Whether quantize_blocks writes `type`: Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
bool can_quantize(DType type);
// The quantize_row_* of `type`; throws std::invalid_argument for a type can_quantize rejects.
void quantize_blocks(DType type, const float* x, int64_t n, std::byte* out);

// The inverse is kernels::dequantize_blocks (kernels/ggml_blocks.h), shared by every ggml block type.

}  // namespace ge::kernels
