#include "kernels/ggml_blocks.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace ge::kernels {
namespace {

float fp16_at(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

uint8_t byte_at(const std::byte* p, int i) {
  return static_cast<uint8_t>(p[i]);
}

// 16 nibbles of a 32-value block: value j in the low nibble of byte j, value j + 16 in the high one.
void split_nibbles(const std::byte* q, int8_t* code) {
  for (int j = 0; j < 16; ++j) {
    code[j] = static_cast<int8_t>(byte_at(q, j) & 0x0F);
    code[j + 16] = static_cast<int8_t>(byte_at(q, j) >> 4);
  }
}

void set_units(BlockCodes& b, int values, int unit, bool has_offset) {
  b.values = values;
  b.unit = unit;
  b.has_offset = has_offset;
}

void decode_q8_0(const std::byte* p, BlockCodes& b) {
  set_units(b, 32, 32, false);
  b.scale[0] = fp16_at(p);
  std::memcpy(b.code, p + 2, 32);
}

// Q4_0 / Q4_1 / IQ4_NL share the nibble layout; Q5_* add a 5th bit from qh.
void decode_q4_0(const std::byte* p, BlockCodes& b) {
  set_units(b, 32, 32, true);
  b.scale[0] = fp16_at(p);
  b.offset[0] = -8 * b.scale[0];
  split_nibbles(p + 2, b.code);
}

void decode_q4_1(const std::byte* p, BlockCodes& b) {
  set_units(b, 32, 32, true);
  b.scale[0] = fp16_at(p);
  b.offset[0] = fp16_at(p + 2);
  split_nibbles(p + 4, b.code);
}

void add_fifth_bits(const std::byte* qh_bytes, int8_t* code) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 32; ++j) code[j] = static_cast<int8_t>(code[j] | ((qh >> j) & 1) << 4);
}

void decode_q5_0(const std::byte* p, BlockCodes& b) {
  set_units(b, 32, 32, true);
  b.scale[0] = fp16_at(p);
  b.offset[0] = -16 * b.scale[0];
  split_nibbles(p + 6, b.code);
  add_fifth_bits(p + 2, b.code);
}

void decode_q5_1(const std::byte* p, BlockCodes& b) {
  set_units(b, 32, 32, true);
  b.scale[0] = fp16_at(p);
  b.offset[0] = fp16_at(p + 2);
  split_nibbles(p + 8, b.code);
  add_fifth_bits(p + 4, b.code);
}

void decode_iq4_nl(const std::byte* p, BlockCodes& b) {
  set_units(b, 32, 32, false);
  b.scale[0] = fp16_at(p);
  split_nibbles(p + 2, reinterpret_cast<int8_t*>(b.index));
  for (int j = 0; j < 32; ++j) b.code[j] = kIq4Values[b.index[j]];
}

// The 2-bit planes of Q2_K and Q3_K: in each 128-value half, byte l of its 32 holds values l + 32 s at
// shift 2 s.
int two_bits(const std::byte* q, int i) {
  const int half = i / 128, r = i % 128, s = r / 32, l = r % 32;
  return (byte_at(q, half * 32 + l) >> (2 * s)) & 3;
}

void decode_q2_k(const std::byte* p, BlockCodes& b) {
  set_units(b, 256, 16, true);
  const float d = fp16_at(p + 80), dmin = fp16_at(p + 82);
  for (int u = 0; u < 16; ++u) {
    const uint8_t sc = byte_at(p, u);
    b.scale[u] = d * static_cast<float>(sc & 0x0F);
    b.offset[u] = -(dmin * static_cast<float>(sc >> 4));
  }
  for (int i = 0; i < 256; ++i) b.code[i] = static_cast<int8_t>(two_bits(p + 16, i));
}

// Q3_K's 16 6-bit scales: low 4 bits in bytes 0-7 (scale j: byte j % 8, nibble j / 8), high 2 bits in
// bytes 8-11 (scale j: byte 8 + j % 4, bits 2 (j / 4)).
int q3_k_scale(const std::byte* s, int j) {
  const int low = (byte_at(s, j % 8) >> (4 * (j / 8))) & 0x0F;
  const int high = (byte_at(s, 8 + j % 4) >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

void decode_q3_k(const std::byte* p, BlockCodes& b) {
  set_units(b, 256, 16, true);
  const float d = fp16_at(p + 108);
  for (int u = 0; u < 16; ++u) {
    b.scale[u] = d * static_cast<float>(q3_k_scale(p + 96, u));
    b.offset[u] = -4 * b.scale[u];
  }
  for (int i = 0; i < 256; ++i) {
    const int hbit = (byte_at(p, i % 32) >> (i / 32)) & 1;
    b.code[i] = static_cast<int8_t>(two_bits(p + 32, i) | hbit << 2);
  }
}

// Q4_K / Q5_K's 8 6-bit scales and mins (ggml's get_scale_min_k4).
void k4_scale_min(const std::byte* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = byte_at(s, j) & 63;
    m = byte_at(s, j + 4) & 63;
  } else {
    sc = (byte_at(s, j + 4) & 0x0F) | (byte_at(s, j - 4) >> 6) << 4;
    m = (byte_at(s, j + 4) >> 4) | (byte_at(s, j) >> 6) << 4;
  }
}

void k4_units(const std::byte* p, BlockCodes& b) {
  set_units(b, 256, 32, true);
  const float d = fp16_at(p), dmin = fp16_at(p + 2);
  for (int u = 0; u < 8; ++u) {
    int sc, m;
    k4_scale_min(p + 4, u, sc, m);
    b.scale[u] = d * static_cast<float>(sc);
    b.offset[u] = -(dmin * static_cast<float>(m));
  }
}

// Each 32 nibble bytes hold 64 values: 64 i + l in the low nibbles, 64 i + 32 + l in the high ones.
void k_nibbles(const std::byte* q, int8_t* code) {
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < 32; ++l) {
      code[64 * i + l] = static_cast<int8_t>(byte_at(q, 32 * i + l) & 0x0F);
      code[64 * i + 32 + l] = static_cast<int8_t>(byte_at(q, 32 * i + l) >> 4);
    }
}

void decode_q4_k(const std::byte* p, BlockCodes& b) {
  k4_units(p, b);
  k_nibbles(p + 16, b.code);
}

void decode_q5_k(const std::byte* p, BlockCodes& b) {
  k4_units(p, b);
  k_nibbles(p + 48, b.code);
  for (int i = 0; i < 256; ++i) {
    const int bit = (byte_at(p + 16, i % 32) >> (i / 32)) & 1;
    b.code[i] = static_cast<int8_t>(b.code[i] | bit << 4);
  }
}

void decode_q6_k(const std::byte* p, BlockCodes& b) {
  set_units(b, 256, 16, false);
  const std::byte *ql = p, *qh = p + 128, *sc = p + 192;
  const float d = fp16_at(p + 208);
  for (int u = 0; u < 16; ++u) b.scale[u] = d * static_cast<float>(static_cast<int8_t>(sc[u]));
  for (int i = 0; i < 256; ++i) {
    const int half = i / 128, r = i % 128, s = r / 32, l = r % 32;
    const uint8_t low_byte = byte_at(ql, half * 64 + (s % 2) * 32 + l);
    const int low = (s < 2 ? low_byte : low_byte >> 4) & 0x0F;
    const int high = (byte_at(qh, half * 32 + l) >> (2 * s)) & 3;
    b.code[i] = static_cast<int8_t>((low | high << 4) - 32);
  }
}

void decode_iq4_xs(const std::byte* p, BlockCodes& b) {
  set_units(b, 256, 32, false);
  const float d = fp16_at(p);
  uint16_t scales_h;
  std::memcpy(&scales_h, p + 2, 2);
  for (int u = 0; u < 8; ++u) {
    const int low = (byte_at(p + 4, u / 2) >> (4 * (u % 2))) & 0x0F;
    const int high = (scales_h >> (2 * u)) & 3;
    b.scale[u] = d * static_cast<float>((low | high << 4) - 32);
    split_nibbles(p + 8 + 16 * u, reinterpret_cast<int8_t*>(b.index + 32 * u));
  }
  for (int i = 0; i < 256; ++i) b.code[i] = kIq4Values[b.index[i]];
}

}  // namespace

void decode_block(DType type, const std::byte* block, BlockCodes& out) {
  switch (type) {
    case DType::Q8_0:
      return decode_q8_0(block, out);
    case DType::Q4_0:
      return decode_q4_0(block, out);
    case DType::Q4_1:
      return decode_q4_1(block, out);
    case DType::Q5_0:
      return decode_q5_0(block, out);
    case DType::Q5_1:
      return decode_q5_1(block, out);
    case DType::Q2_K:
      return decode_q2_k(block, out);
    case DType::Q3_K:
      return decode_q3_k(block, out);
    case DType::Q4_K:
      return decode_q4_k(block, out);
    case DType::Q5_K:
      return decode_q5_k(block, out);
    case DType::Q6_K:
      return decode_q6_k(block, out);
    case DType::IQ4_NL:
      return decode_iq4_nl(block, out);
    case DType::IQ4_XS:
      return decode_iq4_xs(block, out);
    default:
      throw std::invalid_argument("decode_block: " + std::string(dtype_info(type).name) +
                                  " is not a ggml block type");
  }
}

// Compiled with -ffp-contract=off (CMakeLists.txt): scale * code + offset must round twice, as ggml's
// dequantizers do, not once as an FMA would.
void dequantize_blocks(DType type, const std::byte* in, int64_t n, float* out) {
  const DTypeInfo& info = dtype_info(type);
  BlockCodes b;
  for (int64_t first = 0; first < n; first += info.block_elems, in += info.block_bytes) {
    decode_block(type, in, b);
    for (int i = 0; i < b.values; ++i) {
      const float v = b.scale[i / b.unit] * static_cast<float>(b.code[i]);
      out[first + i] = b.has_offset ? v + b.offset[i / b.unit] : v;
    }
  }
}

}  // namespace ge::kernels
