// ggml's block-quantized weight formats, decoded. Each block of a row holds its codes and the scales
// (and for some types minimums) of its sub-blocks; the layouts, from ggml-common.h ("K" types take
// blocks of 256 values, the others of 32; d, dmin: fp16; all multi-byte fields little-endian):
//   Q8_0   34 B: d, int8 q[32]                                     value d * q
//   Q4_0   18 B: d, nibbles[16] (byte j: value j low, j + 16 high)  d * (q - 8)
//   Q4_1   20 B: d, m, nibbles[16]                                 d * q + m
//   Q5_0   22 B: d, qh (u32: bit j = 5th bit of value j), nibbles[16]   d * (q - 16)
//   Q5_1   24 B: d, m, qh, nibbles[16]                             d * q + m
//   Q2_K   84 B: scales[16] (low nibble: scale, high: min, one per 16 values), q[64] (2 bits; byte l of
//                each 32-byte half holds values l, l + 32, l + 64, l + 96 of its 128 at shifts 0, 2, 4, 6),
//                d, dmin                                            d * sc * q - dmin * m
//   Q3_K  110 B: hmask[32] (bit j of byte l: 3rd bit of value 32 j + l), q[64] (2 low bits, as Q2_K),
//                scales[12] (16 6-bit scales, packed), d            d * (sc - 32) * (q - 4 * !hbit)
//   Q4_K  144 B: d, dmin, scales[12] (8 6-bit scales and 8 6-bit mins, packed), nibbles[128] (each 32
//                bytes: values 64 i + l low, 64 i + 32 + l high)    d * sc * q - dmin * m, per 32 values
//   Q5_K  176 B: d, dmin, scales[12], qh[32] (bit 2 i / 2 i + 1 of byte l: 5th bit of value 64 i + l /
//                64 i + 32 + l), nibbles[128]                       d * sc * q - dmin * m
//   Q6_K  210 B: ql[128] (4 low bits), qh[64] (2 high bits), int8 scales[16], d: per 128 values, byte l
//                of ql[0..64) and qh[0..32) hold values l, l + 32, l + 64, l + 96     d * sc * (q - 32)
//   IQ4_NL 18 B: d, nibbles[16] as Q4_0, each an index into kIq4Values                d * table[q]
//   IQ4_XS 136 B: d, scales_h (u16), scales_l[4] (8 6-bit scales, one per 32 values), nibbles[128] as
//                8 IQ4_NL blocks                                    d * (sc - 32) * table[q]
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace ge::kernels {

// IQ4_NL / IQ4_XS's non-linear 4-bit values (ggml's kvalues_iq4nl).
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

// One block as integer codes with an affine map per unit: value i = scale[u] * code[i] (+ offset[u]),
// u = i / unit. Codes are the signed values ggml multiplies (Q8_0's q, Q6_K's q - 32, IQ4's table entry)
// or the unsigned ones of the affine types (Q4_1 / Q5_1 / K-type codes, and Q4_0 / Q5_0 / Q3_K's q with
// their zero point folded into the offset, which is exact there).
struct BlockCodes {
  static constexpr int kMaxValues = 256, kMaxUnits = 16;
  int values = 0;  // per block: 32 or 256
  int unit = 0;    // values per scale: 16 or 32 (or 32 for the 32-value types)
  bool has_offset = false;
  int8_t code[kMaxValues];
  uint8_t index[kMaxValues];  // IQ4 only: the nibble that picked code[i] from kIq4Values
  float scale[kMaxUnits];
  float offset[kMaxUnits];
};

// Decodes one block of a ggml block type other than Q8_0 / Q4_0 handled here too (every type that
// is_ggml_block accepts).
void decode_block(DType type, const std::byte* block, BlockCodes& out);

// n values (whole blocks) of a row -> f32, each value computed as ggml's dequantize_row_* does; these are
// the weights every kernel's exact path multiplies with.
void dequantize_blocks(DType type, const std::byte* in, int64_t n, float* out);

}  // namespace ge::kernels
