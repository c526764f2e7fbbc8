// Q8_0 / Q4_0 quantization: bit-exact against a plain transcription of ggml's reference formulas written
// here, and dequantize(quantize(x)) within the formats' rounding bounds.
#include "kernels/quantize.h"
#include "kernels/ggml_blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

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

}  // namespace
}  // namespace ge
