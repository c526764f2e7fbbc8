// Block quantization (Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): Q8_0 / Q4_0 bit-exact against a plain
// transcription of ggml's reference formulas written here, every type bit-exact against bytes captured
// from ggml's own reference quantizers, and dequantize(quantize(x)) within each format's error bounds.
#include "kernels/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/ggml_blocks.h"
#include "tensor/dtype.h"

namespace ge {
namespace {

using kernels::kQ4_0BlockBytes;
using kernels::kQ8_0BlockBytes;

// ggml's quantize_row_q8_0_ref, one block at a time, into plain byte vectors.
std::vector<uint8_t> reference_q8_0(const std::vector<float>& x) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    const uint16_t h = f32_to_f16(d);
    out.push_back(h & 0xff);
    out.push_back(h >> 8);
    for (int j = 0; j < 32; ++j)
      out.push_back(static_cast<uint8_t>(static_cast<int8_t>(roundf(x[b + j] * id))));
  }
  return out;
}

// ggml's quantize_row_q4_0_ref.
std::vector<uint8_t> reference_q4_0(const std::vector<float>& x) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(x[b + j])) {
        amax = std::fabs(x[b + j]);
        max = x[b + j];
      }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    const uint16_t h = f32_to_f16(d);
    out.push_back(h & 0xff);
    out.push_back(h >> 8);
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[b + j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[b + 16 + j] * id + 8.5f)));
      out.push_back(static_cast<uint8_t>(lo | (hi << 4)));
    }
  }
  return out;
}

// Random blocks, then the edge cases: all zeros, one large value among small ones, a negative maximum,
// a positive maximum with its negation present (the q4_0 code that needs the cap at 15), exact ties.
std::vector<float> test_row() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> x(32 * 12);
  for (float& v : x) v = normal(rng);
  float* zeros = &x[32 * 8];
  std::fill(zeros, zeros + 32, 0.0f);
  x[32 * 9 + 5] = 40.0f;
  x[32 * 10 + 20] = -3.5f;
  x[32 * 11 + 3] = 1.25f;
  x[32 * 11 + 30] = -1.25f;
  x[32 * 7 + 0] = 0.5f;
  x[32 * 7 + 31] = -0.5f;
  return x;
}

std::vector<uint8_t> as_bytes(const std::vector<std::byte>& v) {
  std::vector<uint8_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size());
  return out;
}

float block_scale(const std::vector<std::byte>& q, size_t block, size_t block_bytes) {
  uint16_t h;
  std::memcpy(&h, q.data() + block * block_bytes, 2);
  return f16_to_f32(h);
}

TEST(Quantize, Q8_0MatchesGgmlReferenceBitForBit) {
  const auto x = test_row();
  std::vector<std::byte> q(x.size() / 32 * kQ8_0BlockBytes);
  kernels::quantize_row_q8_0(x.data(), static_cast<int64_t>(x.size()), q.data());
  EXPECT_EQ(as_bytes(q), reference_q8_0(x));
}

TEST(Quantize, Q4_0MatchesGgmlReferenceBitForBit) {
  const auto x = test_row();
  std::vector<std::byte> q(x.size() / 32 * kQ4_0BlockBytes);
  kernels::quantize_row_q4_0(x.data(), static_cast<int64_t>(x.size()), q.data());
  EXPECT_EQ(as_bytes(q), reference_q4_0(x));
}

TEST(Quantize, Q4_0NegativeMaximumGivesANegativeScaleAndCode0) {
  std::vector<float> x(32, 0.1f);
  x[4] = -2.0f;
  std::vector<std::byte> q(kQ4_0BlockBytes);
  kernels::quantize_row_q4_0(x.data(), 32, q.data());
  EXPECT_EQ(block_scale(q, 0, kQ4_0BlockBytes), f16_to_f32(f32_to_f16(0.25f)));  // -2 / -8
  EXPECT_EQ(static_cast<uint8_t>(q[2 + 4]) & 0x0f, 0);                           // -2 = d * (0 - 8)
}

// Rounding to the nearest code costs at most half a step (d / 2) for Q8_0. Q4_0's codes are truncated
// from x / d + 8.5 and capped at 15, so the element opposite the maximum can lose a whole step: <= d.
// The fp16-rounded stored scale differs slightly from the f32 one the codes used, hence the slack.
TEST(Quantize, DequantizeOfQuantizeIsWithinTheStepBound) {
  const auto x = test_row();
  const size_t blocks = x.size() / 32;
  std::vector<std::byte> q8(blocks * kQ8_0BlockBytes), q4(blocks * kQ4_0BlockBytes);
  std::vector<float> y8(x.size()), y4(x.size());
  const auto n = static_cast<int64_t>(x.size());
  kernels::quantize_row_q8_0(x.data(), n, q8.data());
  kernels::quantize_row_q4_0(x.data(), n, q4.data());
  kernels::dequantize_blocks(DType::Q8_0, q8.data(), n, y8.data());
  kernels::dequantize_blocks(DType::Q4_0, q4.data(), n, y4.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const float d8 = block_scale(q8, i / 32, kQ8_0BlockBytes);
    const float d4 = std::fabs(block_scale(q4, i / 32, kQ4_0BlockBytes));
    const float slack = 1e-3f * std::fabs(x[i]) + 1e-7f;
    EXPECT_LE(std::fabs(y8[i] - x[i]), d8 / 2 + slack) << i;
    EXPECT_LE(std::fabs(y4[i] - x[i]), d4 + slack) << i;
  }
  for (size_t i = 32 * 8; i < 32 * 9; ++i) {  // the all-zero block
    EXPECT_EQ(y8[i], 0.0f);
    EXPECT_EQ(y4[i], 0.0f);
  }
}

// ---- Every type against ggml's reference quantizers, and the error bounds of each format.

constexpr DType kQuantizable[] = {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q5_1,
                                  DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::string name_of(DType t) {
  return std::string(dtype_info(t).name);
}

std::vector<std::byte> quantized(DType t, const std::vector<float>& x) {
  std::vector<std::byte> q(*dtype_bytes(t, static_cast<int64_t>(x.size())));
  kernels::quantize_blocks(t, x.data(), static_cast<int64_t>(x.size()), q.data());
  return q;
}

std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  const std::vector<std::byte> q = quantized(t, x);
  std::vector<float> y(x.size());
  kernels::dequantize_blocks(t, q.data(), static_cast<int64_t>(x.size()), y.data());
  return y;
}

std::string hex(const std::vector<std::byte>& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::byte b : bytes) {
    out += digits[static_cast<uint8_t>(b) >> 4];
    out += digits[static_cast<uint8_t>(b) & 0x0F];
  }
  return out;
}

// Deterministic values from integer arithmetic and float operations no compiler may fuse (portable, unlike
// std::normal_distribution): a 32-bit LCG's top 24 bits as u in [-1, 1), shaped per 256-value block:
// symmetric, heavy-tailed (u^3), all positive with an offset, sparse with an outlier; scales 2^-2..2^2.
inline std::vector<float> capture_input(int64_t n) {
  uint32_t state = 12345;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    const float u = static_cast<float>(static_cast<int32_t>(state >> 8) - (1 << 23)) / 8388608.0f;
    const int64_t block = i / 256;
    const float scale = static_cast<float>(1 << (block % 5)) / 4.0f;
    float v = 0;
    switch (block % 4) {
      case 0:
        v = 0.05f * u;
        break;
      case 1:
        v = 0.2f * u * u * u;
        break;
      case 2:
        v = 0.1f * (3.0f + u);  // not 0.3 + 0.1 u: a fused multiply-add would change it
        break;
      case 3:
        v = (state & 0x700) == 0 ? u : (i % 256 == 77 ? 4.0f : 0.0f);
        break;
    }
    x[static_cast<size_t>(i)] = scale * v;
  }
  return x;
}

// FNV-1a, 64 bits.
inline uint64_t fnv1a(const void* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(data)[i]) * 0x100000001b3ull;
  return h;
}

// The bytes ggml's quantize_row_<type>_ref writes for capture_input(256) (the K types' one super-block,
// the others' 8 blocks), and FNV-1a hashes of what it writes for capture_input(256 * 64). Generated once
// by a throwaway program linking llama.cpp's libggml-base (unslothai/llama.cpp d32676d, CPU build, no
// -march: no fused multiply-adds) that called those functions on the same input and printed these lines.
struct GgmlBytes {
  DType type;
  const char* hex;
};
const GgmlBytes kGgmlSuperBlock[] = {
    {DType::Q5_0,
     "529263a4c5db3f1f3f1c03bd200e7d27afb8d15e6af134122cdf3a6eff79a27f3099e96aff6216c5c4e58e496191e698"
     "40923996f515b50c4f5442f7cfcaf4d214f56692b944a3673797a9640af7b4f357d90d38056e59231c9232be69acd2cb"
     "a82d43c5c0d7ebb22110d455b1d46212a44434a10ab633c0637c483d334bd22097959917469293d371b1a69388486c3b"
     "301db8f40492736da3494e127fd59d3ccb613b85d8576f2ffbb036016c2392b2"},
    {DType::Q5_1,
     "85124fa29c5b3a24c0e0d1e4fc53dff193d851573eb2a60e411234a22cdf3a6eef79a27f2089e96aef5115c5c4e58e49"
     "791139a11967bf6dc66a0aea4af3b1acbd0841361b2deb0a95125aa246bb5c9cc868579cf5094b1cb83603c7fa91a7dc"
     "b211eca0cd4196530c2246c2ab181f28133ccdcd19993e0a0a1262a2a44434a10ab644d0739e483f534cd33097a59a27"
     "ec1134a16c2c8e4c485b66a681b3afe025fafb6d7b814ba439124ea27fd59d3cdb613b95d8576f2ffbb036117c3392b3"},
    {DType::Q4_K,
     "b1017c0afdfbf2febcfcf2fcf5ef5ffd704098fa0ec15758f99cb0abaf21fbc776cf56bf9fca763874b68ae261fdc520"
     "4bc5b55d2d41d066cfbc18b3d68f3ee56e3ba8cffa0fa50d5e108aeaf0495fe05e319b0915d44fec1a5686073424cf35"
     "00599a66adb020199829661648c44980d485daaac1b9fe70d205bc1de5289592e23a9acce425359e71579e8ab3945955"},
    {DType::Q5_K,
     "d400670afefcf5fffffdf4fe16f949fc9488fbd785e2d9319f0fe64b8b4cb78a8457fccfbf2708d53412cfce98a75628"
     "e09021f40d9390a1f31951574f52e69eec7ead7e2f85ed60e95d05c5c3eb8a40868a6aba5a83b1cc8d682176ab1d6bca"
     "cc66509ef40f4b0abb3004c3e192aed0ad6246023be88ff834cc3d0e7959ae7a00b344dc7b9140325143dc2d91a99320"
     "b81bb6578173fff0b50a6b1dcb312b34d466369ad85b6a2ef2bf3f16773895ba"},
    {DType::Q6_K,
     "f04043898b561083f62332b07ff4ad5d8723e634611695b08de57586caaa3ceffe52157e8102d3845e031b2aa84aace1"
     "632f5dc01afc64e69383fe7428c0ae5bc5651109856a00ae1673814158aa5328302a1eaccd52722866eb1c2dd6b54b71"
     "541c559107e7d0ea6707b3317e7a315f209586c81ccf97b637d889f411a211c224d4da7e334cc656fefb28cbdbb03edd"
     "8ad05a0414c16ace8af655133b90823fe4a3d991f29ec47cf1268a02e212acb230d65a052be8e042ba924551666dd6a8"
     "78827a966094698089607f7985837b9b3500"},
};

struct GgmlHash {
  DType type;
  uint64_t fnv1a;
};
const GgmlHash kGgmlHashes[] = {
    {DType::Q8_0, 0x8e3ffe3cd16d6ca0ull}, {DType::Q4_0, 0x278957aa4792655dull},
    {DType::Q5_0, 0xd7e0eb5f97fb5dc5ull}, {DType::Q5_1, 0xe3140b6868bf1f43ull},
    {DType::Q4_K, 0xea4de485725dda25ull}, {DType::Q5_K, 0xf9aa2f83a26cbb06ull},
    {DType::Q6_K, 0x09c0b9eb7b87497dull},
};

TEST(Quantize, BytesEqualGgmlsReferenceQuantizers) {
  const std::vector<float> one = capture_input(256);
  for (const GgmlBytes& want : kGgmlSuperBlock)
    EXPECT_EQ(hex(quantized(want.type, one)), want.hex) << name_of(want.type);
  const std::vector<float> many = capture_input(256 * 64);
  for (const GgmlHash& want : kGgmlHashes) {
    const std::vector<std::byte> q = quantized(want.type, many);
    EXPECT_EQ(fnv1a(q.data(), q.size()), want.fnv1a) << name_of(want.type);
  }
}

// Block sizes are ggml's (dtype_info holds ggml's table), and a row writes exactly its blocks.
TEST(Quantize, WritesExactlyTheRowsBlocks) {
  EXPECT_EQ(kernels::kQ8_0BlockBytes, dtype_info(DType::Q8_0).block_bytes);
  EXPECT_EQ(kernels::kQ4_0BlockBytes, dtype_info(DType::Q4_0).block_bytes);
  EXPECT_EQ(kernels::kQ5_0BlockBytes, dtype_info(DType::Q5_0).block_bytes);
  EXPECT_EQ(kernels::kQ5_1BlockBytes, dtype_info(DType::Q5_1).block_bytes);
  EXPECT_EQ(kernels::kQ4_KBlockBytes, dtype_info(DType::Q4_K).block_bytes);
  EXPECT_EQ(kernels::kQ5_KBlockBytes, dtype_info(DType::Q5_K).block_bytes);
  EXPECT_EQ(kernels::kQ6_KBlockBytes, dtype_info(DType::Q6_K).block_bytes);
  const std::vector<float> x = capture_input(512);
  for (DType t : kQuantizable) {
    ASSERT_TRUE(kernels::can_quantize(t)) << name_of(t);
    const size_t bytes = *dtype_bytes(t, 512);
    std::vector<std::byte> out(bytes + 64, std::byte{0xA5});
    kernels::quantize_blocks(t, x.data(), 512, out.data());
    for (size_t i = bytes; i < out.size(); ++i)
      ASSERT_EQ(out[i], std::byte{0xA5}) << name_of(t) << " wrote past its blocks";
  }
}

TEST(Quantize, RefusesTypesWithoutAQuantizer) {
  const std::vector<float> x(256, 1.0f);
  std::vector<std::byte> out(1024);
  for (DType t : {DType::Q4_1, DType::Q2_K, DType::Q3_K, DType::IQ4_NL, DType::IQ4_XS, DType::F16}) {
    EXPECT_FALSE(kernels::can_quantize(t)) << name_of(t);
    EXPECT_THROW(kernels::quantize_blocks(t, x.data(), 256, out.data()), std::invalid_argument) << name_of(t);
  }
}

// Zeros stay exactly zero; Q8_0, Q5_1 and the K types store them as all-zero blocks. (Q4_0 / Q5_0 store
// the zero point: codes 8 / 16.)
TEST(Quantize, ZerosRoundTripExactly) {
  const std::vector<float> zeros(512, 0.0f);
  for (DType t : kQuantizable) {
    for (float y : round_trip(t, zeros)) ASSERT_EQ(y, 0.0f) << name_of(t);
    if (t == DType::Q4_0 || t == DType::Q5_0) continue;
    for (std::byte b : quantized(t, zeros)) ASSERT_EQ(b, std::byte{0}) << name_of(t);
  }
}

// A constant row comes back within the fp16 rounding of its stored scale or minimum (the K types store
// it through a 6-bit level times an fp16 step: a relative 2^-11 each). Constants whose K-type steps stay
// normal fp16 numbers: below ~1e-2 the step (c / 15 / 63 for Q4_K) is subnormal and coarser.
TEST(Quantize, ConstantRowsRoundTripToTheConstant) {
  for (float c : {0.37f, -1.5f, 40.0f}) {
    const std::vector<float> x(512, c);
    for (DType t : kQuantizable) {
      const std::vector<float> y = round_trip(t, x);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], c, 2e-3f * std::fabs(c)) << name_of(t) << " " << c << " [" << i << "]";
    }
  }
}

// Random weights: every value within one step of a plain grid over its 32-value group's range (range /
// (levels - 1)); the searches of the K types can trade the extremes for the bulk, but on normal data not
// by more than that. The relative RMS errors, with some margin over what these formats give (Q8_0 0.0053,
// Q4_0 0.086, Q5_0 0.042, Q5_1 0.038, Q4_K 0.071, Q5_K 0.036, Q6_K 0.018 here), also show the K types'
// fitted scales beating their 32-value counterparts at the same number of code bits.
TEST(Quantize, RoundTripErrorIsWithinEachFormatsBounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = normal(rng);
  struct Bound {
    DType type;
    int levels;  // codes per value
    float rms;   // relative RMS error bound
  };
  for (const Bound& b :
       {Bound{DType::Q8_0, 256, 0.006f}, Bound{DType::Q4_0, 16, 0.095f}, Bound{DType::Q5_0, 32, 0.047f},
        Bound{DType::Q5_1, 32, 0.042f}, Bound{DType::Q4_K, 16, 0.078f}, Bound{DType::Q5_K, 32, 0.040f},
        Bound{DType::Q6_K, 64, 0.020f}}) {
    const std::vector<float> y = round_trip(b.type, x);
    double err2 = 0, x2 = 0;
    for (size_t group = 0; group < x.size(); group += 32) {
      const auto [lo, hi] = std::minmax_element(x.begin() + group, x.begin() + group + 32);
      const float step = (*hi - *lo) / static_cast<float>(b.levels - 1);
      for (size_t i = group; i < group + 32; ++i) {
        ASSERT_LE(std::fabs(y[i] - x[i]), step) << name_of(b.type) << " [" << i << "]";
        err2 += (y[i] - x[i]) * (y[i] - x[i]);
        x2 += x[i] * x[i];
      }
    }
    const double rms = std::sqrt(err2 / x2);
    std::printf("%s: relative RMS error %.4f\n", name_of(b.type).c_str(), rms);
    EXPECT_LT(rms, b.rms) << name_of(b.type);
  }
}

}  // namespace
}  // namespace ge
