// Every ggml block type decoded from blocks that the test packs itself from ggml's documented layouts
// (ggml-common.h: field order, bit positions), with random codes and scales: the decoder must give
// exactly scale * code (+ offset) per value, as ggml's dequantize_row_* computes it.
#include "kernels/ggml_blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/thread_pool.h"
#include "tensor/dtype.h"

namespace ge::kernels {
namespace {

// A block under construction: fields written at byte offsets, codes ORed in bit by bit.
struct Packer {
  std::vector<uint8_t> bytes;
  explicit Packer(size_t n) : bytes(n, 0) {}
  void put_bits(size_t byte, int shift, int value, int n_bits) {
    bytes[byte] = static_cast<uint8_t>(bytes[byte] | (value & ((1 << n_bits) - 1)) << shift);
  }
  void put_f16(size_t at, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(&bytes[at], &h, 2);
  }
};

struct Case {
  DType type;
  std::vector<uint8_t> block;
  std::vector<float> expected;
};

std::mt19937 rng(7);
int uniform(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}
// An fp16-representable scale, sign included (ggml's d can be negative for Q6_K-style scales).
float half_scale() {
  return f16_to_f32(f32_to_f16(std::uniform_real_distribution<float>(-0.05f, 0.05f)(rng)));
}

// 32 values as 16 bytes of nibbles at `at`: value j in byte j's low nibble, j + 16 in its high one.
void put_nibbles32(Packer& p, size_t at, const int* q) {
  for (int j = 0; j < 32; ++j) p.put_bits(at + j % 16, j < 16 ? 0 : 4, q[j], 4);
}

Case q8_0() {
  Packer p(34);
  const float d = half_scale();
  p.put_f16(0, d);
  Case c{DType::Q8_0, {}, {}};
  for (int j = 0; j < 32; ++j) {
    const int q = uniform(-128, 127);
    p.bytes[2 + j] = static_cast<uint8_t>(q);
    c.expected.push_back(d * static_cast<float>(q));
  }
  c.block = p.bytes;
  return c;
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1: d [, m] [, qh] then nibbles.
Case legacy(DType type, int bits, bool has_min) {
  const size_t qh_at = has_min ? 4 : 2, qs_at = qh_at + (bits == 5 ? 4 : 0);
  Packer p(qs_at + 16);
  const float d = half_scale(), m = has_min ? half_scale() : 0.0f;
  p.put_f16(0, d);
  if (has_min) p.put_f16(2, m);
  int q[32];
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = uniform(0, (1 << bits) - 1);
    if (bits == 5) qh |= static_cast<uint32_t>(q[j] >> 4) << j;
  }
  if (bits == 5) std::memcpy(&p.bytes[qh_at], &qh, 4);
  put_nibbles32(p, qs_at, q);
  Case c{type, p.bytes, {}};
  const int zero = 1 << (bits - 1);
  for (int j = 0; j < 32; ++j)
    c.expected.push_back(has_min ? d * static_cast<float>(q[j]) + m : d * static_cast<float>(q[j] - zero));
  return c;
}

Case iq4_nl() {
  Packer p(18);
  const float d = half_scale();
  p.put_f16(0, d);
  int q[32];
  for (int& v : q) v = uniform(0, 15);
  put_nibbles32(p, 2, q);
  Case c{DType::IQ4_NL, p.bytes, {}};
  for (int j = 0; j < 32; ++j) c.expected.push_back(d * static_cast<float>(kIq4Values[q[j]]));
  return c;
}

// Value v of a K block's 2-bit plane: byte 32 * (v / 128) + v % 32, at shift 2 * ((v % 128) / 32).
void put_two_bits(Packer& p, size_t at, int v, int q) {
  p.put_bits(at + 32 * (v / 128) + v % 32, 2 * ((v % 128) / 32), q, 2);
}

Case q2_k() {
  Packer p(84);
  const float d = half_scale(), dmin = half_scale();
  p.put_f16(80, d);
  p.put_f16(82, dmin);
  int sc[16], mn[16];
  for (int u = 0; u < 16; ++u) {
    sc[u] = uniform(0, 15);
    mn[u] = uniform(0, 15);
    p.bytes[u] = static_cast<uint8_t>(sc[u] | mn[u] << 4);
  }
  Case c{DType::Q2_K, {}, {}};
  for (int v = 0; v < 256; ++v) {
    const int q = uniform(0, 3);
    put_two_bits(p, 16, v, q);
    c.expected.push_back(d * static_cast<float>(sc[v / 16]) * static_cast<float>(q) -
                         dmin * static_cast<float>(mn[v / 16]));
  }
  c.block = p.bytes;
  return c;
}

Case q3_k() {
  Packer p(110);
  const float d = half_scale();
  p.put_f16(108, d);
  int sc[16];
  for (int j = 0; j < 16; ++j) {
    sc[j] = uniform(0, 63);
    p.put_bits(96 + j % 8, 4 * (j / 8), sc[j] & 15, 4);
    p.put_bits(104 + j % 4, 2 * (j / 4), sc[j] >> 4, 2);
  }
  Case c{DType::Q3_K, {}, {}};
  for (int v = 0; v < 256; ++v) {
    const int low = uniform(0, 3), high = uniform(0, 1);
    put_two_bits(p, 32, v, low);
    p.put_bits(v % 32, v / 32, high, 1);
    const float dl = d * static_cast<float>(sc[v / 16] - 32);
    c.expected.push_back(dl * static_cast<float>(low - (high ? 0 : 4)));
  }
  c.block = p.bytes;
  return c;
}

// Q4_K / Q5_K: d, dmin, 12 bytes of 6-bit scales and mins (ggml's get_scale_min_k4 in reverse).
void put_k4_scales(Packer& p, const int* sc, const int* mn) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      p.put_bits(4 + j, 0, sc[j], 6);
      p.put_bits(4 + j + 4, 0, mn[j], 6);
    } else {
      p.put_bits(4 + j + 4, 0, sc[j] & 15, 4);
      p.put_bits(4 + j + 4, 4, mn[j] & 15, 4);
      p.put_bits(4 + j - 4, 6, sc[j] >> 4, 2);
      p.put_bits(4 + j, 6, mn[j] >> 4, 2);
    }
  }
}

Case q45_k(int bits) {
  const size_t qs_at = bits == 5 ? 48 : 16;
  Packer p(qs_at + 128);
  const float d = half_scale(), dmin = half_scale();
  p.put_f16(0, d);
  p.put_f16(2, dmin);
  int sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = uniform(0, 63);
    mn[j] = uniform(0, 63);
  }
  put_k4_scales(p, sc, mn);
  Case c{bits == 5 ? DType::Q5_K : DType::Q4_K, {}, {}};
  for (int v = 0; v < 256; ++v) {
    const int q = uniform(0, (1 << bits) - 1);
    p.put_bits(qs_at + 32 * (v / 64) + v % 32, (v % 64) < 32 ? 0 : 4, q & 15, 4);
    if (bits == 5) p.put_bits(16 + v % 32, v / 32, q >> 4, 1);
    c.expected.push_back(d * static_cast<float>(sc[v / 32]) * static_cast<float>(q) -
                         dmin * static_cast<float>(mn[v / 32]));
  }
  c.block = p.bytes;
  return c;
}

Case q6_k() {
  Packer p(210);
  const float d = half_scale();
  p.put_f16(208, d);
  int sc[16];
  for (int u = 0; u < 16; ++u) {
    sc[u] = uniform(-128, 127);
    p.bytes[192 + u] = static_cast<uint8_t>(sc[u]);
  }
  Case c{DType::Q6_K, {}, {}};
  for (int v = 0; v < 256; ++v) {
    const int q = uniform(0, 63), r = v % 128, s = r / 32;
    p.put_bits(64 * (v / 128) + 32 * (s % 2) + r % 32, s < 2 ? 0 : 4, q & 15, 4);
    p.put_bits(128 + 32 * (v / 128) + r % 32, 2 * s, q >> 4, 2);
    c.expected.push_back(d * static_cast<float>(sc[v / 16]) * static_cast<float>(q - 32));
  }
  c.block = p.bytes;
  return c;
}

Case iq4_xs() {
  Packer p(136);
  const float d = half_scale();
  p.put_f16(0, d);
  int ls[8];
  uint16_t scales_h = 0;
  for (int b = 0; b < 8; ++b) {
    ls[b] = uniform(0, 63);
    p.put_bits(4 + b / 2, 4 * (b % 2), ls[b] & 15, 4);
    scales_h = static_cast<uint16_t>(scales_h | (ls[b] >> 4) << (2 * b));
  }
  std::memcpy(&p.bytes[2], &scales_h, 2);
  Case c{DType::IQ4_XS, {}, {}};
  for (int b = 0; b < 8; ++b) {
    int q[32];
    for (int& v : q) v = uniform(0, 15);
    put_nibbles32(p, 8 + 16 * b, q);
    for (int j = 0; j < 32; ++j)
      c.expected.push_back(d * static_cast<float>(ls[b] - 32) * static_cast<float>(kIq4Values[q[j]]));
  }
  c.block = p.bytes;
  return c;
}

std::vector<std::function<Case()>> every_type() {
  return {q8_0,
          [] { return legacy(DType::Q4_0, 4, false); },
          [] { return legacy(DType::Q4_1, 4, true); },
          [] { return legacy(DType::Q5_0, 5, false); },
          [] { return legacy(DType::Q5_1, 5, true); },
          iq4_nl,
          q2_k,
          q3_k,
          [] { return q45_k(4); },
          [] { return q45_k(5); },
          q6_k,
          iq4_xs};
}

TEST(GgmlBlocks, EveryTypeDecodesItsDocumentedLayout) {
  for (const auto& make : every_type()) {
    for (int trial = 0; trial < 20; ++trial) {
      const Case c = make();
      const DTypeInfo& info = dtype_info(c.type);
      ASSERT_EQ(c.block.size(), static_cast<size_t>(info.block_bytes)) << info.name;
      ASSERT_EQ(c.expected.size(), static_cast<size_t>(info.block_elems)) << info.name;
      // Two blocks in a row: the second must be read from its own offset.
      std::vector<std::byte> row(2 * c.block.size());
      std::memcpy(row.data(), c.block.data(), c.block.size());
      std::memcpy(row.data() + c.block.size(), c.block.data(), c.block.size());
      std::vector<float> out(2 * c.expected.size());
      dequantize_blocks(c.type, row.data(), static_cast<int64_t>(out.size()), out.data());
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_EQ(out[i], c.expected[i % c.expected.size()]) << info.name << " value " << i;
    }
  }
}

// What the integer kernels compute, in double: activations rounded to 8-bit blocks of the weight's unit
// (d = max|x| / 127, codes round(x / d)) times the dequantized weights; and sum(|w * x|) per output, the
// size of the terms the kernels' f32 sums cancel.
std::vector<double> rounded_activations_product(const Tensor& w, int64_t unit, const std::vector<float>& x,
                                                int64_t n_tokens, std::vector<double>& magnitude) {
  const int64_t cols = w.cols();
  std::vector<double> y(static_cast<size_t>(n_tokens * w.rows()));
  magnitude.assign(y.size(), 0.0);
  std::vector<float> xq(static_cast<size_t>(cols)), row(static_cast<size_t>(cols));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t b = 0; b < cols / unit; ++b) {
      float amax = 0;
      for (int64_t i = b * unit; i < (b + 1) * unit; ++i) amax = std::max(amax, std::abs(xt[i]));
      const float d = amax / 127, id = d != 0 ? 1 / d : 0;
      for (int64_t i = b * unit; i < (b + 1) * unit; ++i)
        xq[i] = d * static_cast<float>(std::lrintf(xt[i] * id));
    }
    for (int64_t r = 0; r < w.rows(); ++r) {
      dequantize_blocks(w.dtype, w.row(r), cols, row.data());
      double sum = 0;
      for (int64_t i = 0; i < cols; ++i) {
        sum += static_cast<double>(row[i]) * xq[i];
        magnitude[t * w.rows() + r] += std::abs(static_cast<double>(row[i]) * xq[i]);
      }
      y[t * w.rows() + r] = sum;
    }
  }
  return y;
}

// A 13 x 2-block matrix of every type (13 rows: one whole block of 8 interleaved rows and a partial one),
// repacked and multiplied with 1-6 tokens: the integer kernels' result is the rounded activations' product.
TEST(GgmlBlocks, RepackedIntegerKernelsMatchRoundedActivations) {
  if (!detail::cpu_has_avx2()) GTEST_SKIP() << "no AVX2";
  ThreadPool pool(2);
  for (const auto& make : every_type()) {
    const DType type = make().type;
    const DTypeInfo& info = dtype_info(type);
    constexpr int64_t kRows = 13, kBlocksPerRow = 2;
    std::vector<std::byte> bytes;
    for (int64_t b = 0; b < kRows * kBlocksPerRow; ++b) {
      const Case c = make();
      for (uint8_t v : c.block) bytes.push_back(static_cast<std::byte>(v));
    }
    Tensor w;
    w.name = std::string(info.name) + " matrix";
    w.dtype = type;
    w.shape = {kRows, kBlocksPerRow * info.block_elems};
    w.data = bytes.data();
    w.nbytes = bytes.size();
    const auto repacked = RepackedMatrix::repack(w);
    ASSERT_TRUE(repacked) << info.name;
    for (int64_t n_tokens = 1; n_tokens <= 6; ++n_tokens) {
      std::vector<float> x(static_cast<size_t>(n_tokens * w.cols()));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& v : x) v = normal(rng);
      std::vector<float> y(static_cast<size_t>(n_tokens * kRows));
      matmul(pool, *repacked, x.data(), n_tokens, y.data());
      std::vector<double> magnitude;
      const std::vector<double> expected =
          rounded_activations_product(w, repacked->unit(), x, n_tokens, magnitude);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], expected[i], 1e-5 + 1e-6 * magnitude[i]) << info.name << " tokens " << n_tokens;
    }
  }
}

TEST(GgmlBlocks, RejectsNonBlockTypes) {
  BlockCodes b;
  std::byte block[4] = {};
  EXPECT_THROW(decode_block(DType::BF16, block, b), std::invalid_argument);
}

}  // namespace
}  // namespace ge::kernels
