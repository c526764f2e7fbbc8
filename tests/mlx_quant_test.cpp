// MLX's quantized formats: element and scale codecs, the quantizer's rules and bit packing (against an
// independent packer), the error bound of each mode, and the matmul kernels on every Highway target
// against the double-precision product with the dequantized matrix.
#include "kernels/mlx_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "highway_targets.h"
#include "kernels/matmul.h"
#include "test_util.h"

namespace ge::kernels {
namespace {

using test::normal_values;

// A quantized matrix that owns its bytes, each buffer sized exactly, so a kernel reading past the end
// of the codes reads past the end of an allocation.
struct OwnedQuantized {
  std::vector<std::byte> codes, scales, biases;
  QuantizedMatrix m;
};

OwnedQuantized quantize_matrix(const QuantParams& p, DType scale_dtype, int64_t rows, int64_t cols,
                               const std::vector<float>& w) {
  OwnedQuantized o;
  o.m.name = "w";
  o.m.params = p;
  o.m.rows = rows;
  o.m.cols = cols;
  o.m.scale_dtype = p.mode == QuantMode::kAffine ? scale_dtype : DType::U8;
  o.codes.resize(static_cast<size_t>(rows) * o.m.code_row_bytes());
  o.scales.resize(static_cast<size_t>(rows) * o.m.scale_row_bytes());
  if (has_biases(p)) o.biases.resize(o.scales.size());
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(p, w.data() + r * cols, cols, scale_dtype, o.codes.data() + r * o.m.code_row_bytes(),
                 o.scales.data() + r * o.m.scale_row_bytes(),
                 has_biases(p) ? o.biases.data() + r * o.m.scale_row_bytes() : nullptr);
  o.m.codes = o.codes.data();
  o.m.scales = o.scales.data();
  o.m.biases = has_biases(p) ? o.biases.data() : nullptr;
  return o;
}

// The packing rule written out bit by bit: bit j of code i is bit (i * bits + j) of the row, counted
// from the least significant bit of byte 0.
std::vector<std::byte> pack_bit_by_bit(const std::vector<uint32_t>& codes, int bits) {
  std::vector<std::byte> out(codes.size() * static_cast<size_t>(bits) / 8);
  for (size_t i = 0; i < codes.size(); ++i)
    for (int j = 0; j < bits; ++j)
      if ((codes[i] >> j) & 1) {
        const size_t bit = i * static_cast<size_t>(bits) + static_cast<size_t>(j);
        out[bit / 8] |= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
      }
  return out;
}

std::vector<QuantParams> every_affine_params() {
  std::vector<QuantParams> out;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int group : {32, 64, 128}) out.push_back({QuantMode::kAffine, bits, group});
  return out;
}

std::vector<QuantParams> every_fp_params() {
  return {default_quant_params(QuantMode::kNvfp4), default_quant_params(QuantMode::kMxfp4),
          default_quant_params(QuantMode::kMxfp8)};
}

TEST(MlxCodecs, E2M1DecodesAndRoundsHalfToEven) {
  const float magnitudes[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint8_t c = 0; c < 16; ++c) {
    const float expected = c & 8 ? -magnitudes[c & 7] : magnitudes[c & 7];
    EXPECT_EQ(e2m1_to_f32(c), expected) << int{c};
    EXPECT_EQ(f32_to_e2m1(e2m1_to_f32(c)), c) << int{c};
  }
  // Midpoints go to the even mantissa; past 6 saturates.
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(0.25f)), 0.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(0.75f)), 1.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(1.25f)), 1.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(1.75f)), 2.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(2.5f)), 2.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(3.5f)), 4.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(5.0f)), 4.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(-5.5f)), -6.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(100.0f)), 6.0f);
}

TEST(MlxCodecs, E4M3MatchesItsDefinition) {
  for (int c = 0; c < 256; ++c) {
    const int e = (c >> 3) & 15, m = c & 7;
    const double magnitude = e == 0 ? m / 8.0 * std::ldexp(1.0, -6) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
    const float expected = static_cast<float>(c & 128 ? -magnitude : magnitude);
    EXPECT_EQ(e4m3_to_f32(static_cast<uint8_t>(c)), expected) << c;
    if ((c & 127) != 127) {  // 0x7F is 480 to MLX, NaN to OCP
      EXPECT_EQ(f32_to_e4m3(expected), c) << c;
    }
  }
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);  // halfway between 1 and 1.125: even mantissa
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3A);  // halfway between 1.125 and 1.25: even mantissa
  EXPECT_EQ(f32_to_e4m3(1e6f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(-1e6f), 0xFE);
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -9)), 0x01);   // smallest subnormal
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);  // half of it: ties to even
}

TEST(MlxCodecs, E8M0IsAPowerOfTwoRoundedInLog2) {
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(130), 8.0f);
  EXPECT_EQ(e8m0_to_f32(0), std::ldexp(1.0f, -127));
  EXPECT_TRUE(std::isinf(e8m0_to_f32(255)));
  EXPECT_EQ(f32_to_e8m0(1.0f), 127);
  EXPECT_EQ(f32_to_e8m0(3.0f), 129);   // log2 3 = 1.58 -> 2
  EXPECT_EQ(f32_to_e8m0(2.8f), 128);   // log2 2.8 = 1.49 -> 1
  EXPECT_EQ(f32_to_e8m0(0.0f), 0);
  EXPECT_EQ(f32_to_e8m0(std::numeric_limits<float>::infinity()), 255);
}

TEST(MlxParams, AcceptsWhatMxQuantizeAccepts) {
  for (const QuantParams& p : every_affine_params()) EXPECT_EQ(quant_params_error(p), "") << describe(p);
  for (const QuantParams& p : every_fp_params()) EXPECT_EQ(quant_params_error(p), "") << describe(p);
  EXPECT_NE(quant_params_error({QuantMode::kAffine, 7, 64}), "");
  EXPECT_NE(quant_params_error({QuantMode::kAffine, 1, 64}), "");
  EXPECT_NE(quant_params_error({QuantMode::kAffine, 4, 16}), "");
  EXPECT_NE(quant_params_error({QuantMode::kNvfp4, 4, 32}), "");
  EXPECT_NE(quant_params_error({QuantMode::kMxfp8, 4, 32}), "");
  EXPECT_EQ(parse_quant_mode("mxfp8"), QuantMode::kMxfp8);
  EXPECT_EQ(parse_quant_mode("int4"), std::nullopt);
}

// With f32 scales the stored scale and bias are the ones the codes were computed with, so each code
// must be round((w - bias) / scale) clipped to [0, 2^bits - 1], the edge of larger magnitude must be the
// bias (code 0 exact), and the row must be those codes packed bit by bit.
TEST(MlxQuantize, AffineCodesFollowMlxRuleAndPackBitByBit) {
  uint32_t seed = 7;
  for (const QuantParams& p : every_affine_params()) {
    SCOPED_TRACE(describe(p));
    const int64_t cols = 3 * 128;
    const std::vector<float> w = normal_values(cols, seed++);
    std::vector<std::byte> codes(static_cast<size_t>(cols * p.bits / 8));
    std::vector<float> scales(cols / p.group_size), biases(cols / p.group_size);
    quantize_row(p, w.data(), cols, DType::F32, codes.data(), reinterpret_cast<std::byte*>(scales.data()),
                 reinterpret_cast<std::byte*>(biases.data()));
    std::vector<uint32_t> expected(cols);
    const float n_bins = static_cast<float>((1 << p.bits) - 1);
    for (int64_t g = 0; g < cols / p.group_size; ++g) {
      float lo = w[g * p.group_size], hi = lo;
      for (int j = 0; j < p.group_size; ++j) {
        lo = std::min(lo, w[g * p.group_size + j]);
        hi = std::max(hi, w[g * p.group_size + j]);
      }
      EXPECT_EQ(biases[g], std::abs(lo) > std::abs(hi) ? lo : hi);
      for (int j = 0; j < p.group_size; ++j) {
        const float q = std::rint((w[g * p.group_size + j] - biases[g]) / scales[g]);
        expected[g * p.group_size + j] = static_cast<uint32_t>(std::clamp(q, 0.0f, n_bins));
      }
    }
    EXPECT_EQ(codes, pack_bit_by_bit(expected, p.bits));
  }
}

// Known rows: codes 0, 1, 2, ... wrapping at 2^bits, straddling byte and word boundaries at 3, 5, 6 bits.
TEST(MlxQuantize, UnpackReadsTheBitStream) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::vector<uint32_t> codes(64);
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint32_t>(i * 7 + 3) % (1u << bits);
    const std::vector<std::byte> packed = pack_bit_by_bit(codes, bits);
    for (size_t i = 0; i < codes.size(); ++i)
      ASSERT_EQ(unpack_code(packed.data(), static_cast<int64_t>(i), bits), codes[i]) << bits << "-bit " << i;
  }
}

// Largest |w - dequantized| one element may have: half a step of its group's grid (plus the rounding of a
// bf16-stored scale and bias), and whatever clipping to the grid's range cuts off: for the fp modes the
// saturation at the largest element; for affine the far end, since MLX moves the scale so that the edge of
// larger magnitude is exact, which can shrink the grid below max - min.
double error_bound(const QuantizedMatrix& m, int64_t row, int64_t col, float w) {
  const QuantParams& p = m.params;
  const int64_t g = col / p.group_size;
  const std::byte* scales = m.scales + row * m.scale_row_bytes();
  if (p.mode == QuantMode::kAffine) {
    const double s = std::abs(load_float(scales, m.scale_dtype, g));
    const double b = std::abs(load_float(m.biases + row * m.scale_row_bytes(), m.scale_dtype, g));
    const double n = (1 << p.bits) - 1;
    const double stored = m.scale_dtype == DType::F32 ? 1e-6 : 0x1p-8 * (s * n + b);
    const double bias = load_float(m.biases + row * m.scale_row_bytes(), m.scale_dtype, g);
    const double far = bias + n * load_float(scales, m.scale_dtype, g);
    const double clipped = std::max({0.0, std::min(bias, far) - w, w - std::max(bias, far)});
    return s / 2 * (1 + 1e-5) + clipped + stored + 1e-7;
  }
  const auto code = static_cast<uint8_t>(scales[g]);
  const double s = p.mode == QuantMode::kNvfp4 ? e4m3_to_f32(code) : e8m0_to_f32(code);
  const double x = std::abs(w) / s;
  if (p.bits == 4) {
    const double half_gap = x < 2 ? 0.25 : x < 4 ? 0.5 : 1.0;
    return s * half_gap + std::max(0.0, std::abs(w) - 6 * s) + 1e-7;
  }
  return s * std::max(x / 16, 0x1p-10) + std::max(0.0, std::abs(w) - 448 * s) + 1e-7;
}

TEST(MlxQuantize, DequantizedWithinEachFormatsBound) {
  std::vector<std::pair<QuantParams, DType>> cases;
  for (const QuantParams& p : every_affine_params())
    for (DType t : {DType::F32, DType::BF16, DType::F16}) cases.push_back({p, t});
  for (const QuantParams& p : every_fp_params()) cases.push_back({p, DType::BF16});
  uint32_t seed = 100;
  for (const auto& [p, scale_dtype] : cases) {
    SCOPED_TRACE(describe(p) + " scales " + std::string(dtype_info(scale_dtype).name));
    const int64_t rows = 9, cols = 256;
    std::vector<float> w = normal_values(static_cast<size_t>(rows * cols), seed++, 0.05f);
    w[5] = 0.0f;
    std::fill(w.begin() + cols, w.begin() + cols + 128, 0.0f);  // all-zero groups
    const OwnedQuantized q = quantize_matrix(p, scale_dtype, rows, cols, w);
    std::vector<float> back(static_cast<size_t>(cols));
    double worst_step_fraction = 0;
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(q.m, r, back.data());
      for (int64_t c = 0; c < cols; ++c) {
        const float v = w[r * cols + c];
        const double bound = error_bound(q.m, r, c, v);
        ASSERT_LE(std::abs(back[c] - v), bound) << "row " << r << " col " << c << " w " << v;
        worst_step_fraction = std::max(worst_step_fraction, std::abs(back[c] - v) / bound);
      }
      if (r == 1) {
        for (int64_t c = 0; c < 128; ++c) ASSERT_EQ(back[c], 0.0f) << "zero group, col " << c;
      }
    }
    EXPECT_GT(worst_step_fraction, 0.2) << "the bound is far from tight: is the test measuring anything?";
  }
}

// The fp scale is the group's largest magnitude over the element format's largest value, rounded to
// E4M3 (nvfp4) or to a power of two (mx).
TEST(MlxQuantize, FpScalesFollowTheGroupMaximum) {
  for (const QuantParams& p : every_fp_params()) {
    SCOPED_TRACE(describe(p));
    const std::vector<float> w = normal_values(128, 3);
    const OwnedQuantized q = quantize_matrix(p, DType::BF16, 1, 128, w);
    for (int64_t g = 0; g < 128 / p.group_size; ++g) {
      float amax = 0;
      for (int j = 0; j < p.group_size; ++j) amax = std::max(amax, std::abs(w[g * p.group_size + j]));
      const float wanted = amax / (p.bits == 4 ? 6.0f : 448.0f);
      const uint8_t expected = p.mode == QuantMode::kNvfp4 ? f32_to_e4m3(wanted) : f32_to_e8m0(wanted);
      EXPECT_EQ(static_cast<uint8_t>(q.scales[g]), expected) << "group " << g;
    }
  }
}

struct MatmulCase {
  QuantParams params;
  DType scale_dtype;
};

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (const QuantParams& p : every_affine_params()) cases.push_back({p, DType::BF16});
  cases.push_back({{QuantMode::kAffine, 4, 64}, DType::F16});
  cases.push_back({{QuantMode::kAffine, 3, 32}, DType::F32});
  for (const QuantParams& p : every_fp_params()) cases.push_back({p, DType::U8});
  return cases;
}

// Bound relative to sum_i |x_i| (|scale * q_i| + |bias|): the kernels sum scale * sum(q x) + bias * sum(x)
// per group in f32, whose rounding is relative to those terms, not to |w|.
double magnitude(const QuantizedMatrix& m, const float* x_row, int64_t row, std::vector<float>& scratch) {
  dequantize_row(m, row, scratch.data());
  const bool affine = m.params.mode == QuantMode::kAffine;
  double sum = 0;
  for (int64_t c = 0; c < m.cols; ++c) {
    const double b =
        affine ? load_float(m.biases + row * m.scale_row_bytes(), m.scale_dtype, c / m.params.group_size) : 0;
    sum += std::abs(x_row[c]) * (std::abs(scratch[c] - b) + std::abs(b));
  }
  return sum;
}

TEST(MlxMatmul, EveryModeOnEveryHighwayTargetMatchesReference) {
  struct Shape {
    int64_t in, out, n_tokens;
  };
  // 1 and 5 rows are all tail rows (read from a padded copy); 301 rows leave rows outside the 4-row
  // tiles; 3 and 17 tokens leave partial token tiles on every target.
  const Shape shapes[] = {{128, 1, 1}, {384, 5, 3}, {1152, 301, 1}, {256, 17, 17}};
  uint32_t seed = 1000;
  for (const MatmulCase& mc : matmul_cases()) {
    for (const Shape& s : shapes) {
      SCOPED_TRACE(describe(mc.params) + " in=" + std::to_string(s.in) + " out=" + std::to_string(s.out) +
                   " n=" + std::to_string(s.n_tokens));
      const std::vector<float> w = normal_values(static_cast<size_t>(s.in * s.out), seed++, 0.05f);
      const std::vector<float> x = normal_values(static_cast<size_t>(s.in * s.n_tokens), seed++);
      const OwnedQuantized q = quantize_matrix(mc.params, mc.scale_dtype, s.out, s.in, w);
      const size_t n_out = static_cast<size_t>(s.out * s.n_tokens);
      std::vector<float> expected(n_out), bound(n_out), scratch(static_cast<size_t>(s.in));
      matmul_reference(q.m, x.data(), s.n_tokens, expected.data());
      for (int64_t t = 0; t < s.n_tokens; ++t)
        for (int64_t o = 0; o < s.out; ++o)
          bound[t * s.out + o] = static_cast<float>(
              static_cast<double>(s.in + 2) * 0x1p-24 * magnitude(q.m, x.data() + t * s.in, o, scratch) + 1e-6);
      on_every_highway_target([&] {
        for (int threads : {1, 2}) {
          ThreadPool pool(threads);
          std::vector<float> y(n_out + 8, std::numeric_limits<float>::quiet_NaN());
          matmul(pool, q.m, x.data(), s.n_tokens, y.data());
          for (size_t i = 0; i < n_out; ++i) ASSERT_NEAR(y[i], expected[i], bound[i]) << "output " << i;
          for (size_t i = n_out; i < y.size(); ++i) ASSERT_TRUE(std::isnan(y[i])) << "wrote past the end";
        }
      });
    }
  }
}

}  // namespace
}  // namespace ge::kernels

namespace ge::kernels {
namespace {

// What the integer kernel computes, in double: activations rounded to 8-bit blocks, one per weight group
// of 4-bit codes, of 32 values for 8-bit codes: d = max|x| / 127, codes round(x / d); times the stored weights.
std::vector<double> reduced_activations_reference(const QuantizedMatrix& m, const std::vector<float>& x,
                                                  int64_t n_tokens) {
  std::vector<double> y(static_cast<size_t>(n_tokens * m.rows));
  std::vector<float> xq(static_cast<size_t>(m.cols)), w(static_cast<size_t>(m.cols));
  const int64_t group = m.params.group_size, unit = m.params.bits == 8 ? 32 : group;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x.data() + t * m.cols;
    for (int64_t b = 0; b < m.cols / unit; ++b) {
      float amax = 0;
      for (int64_t i = b * unit; i < (b + 1) * unit; ++i) amax = std::max(amax, std::abs(xt[i]));
      const float d = amax / 127, id = d != 0 ? 1 / d : 0;
      for (int64_t i = b * unit; i < (b + 1) * unit; ++i) xq[i] = d * static_cast<float>(std::lrintf(xt[i] * id));
    }
    for (int64_t r = 0; r < m.rows; ++r) {
      dequantize_row(m, r, w.data());
      double sum = 0;
      for (int64_t i = 0; i < m.cols; ++i) sum += static_cast<double>(w[i]) * xq[i];
      y[t * m.rows + r] = sum;
    }
  }
  return y;
}

TEST(MlxMatmul, IntegerKernelMatchesEightBitActivationsReference) {
  if (!detail::cpu_has_avx2()) GTEST_SKIP() << "no AVX2";
  const QuantParams params[] = {{QuantMode::kAffine, 4, 64}, {QuantMode::kAffine, 4, 32}, {QuantMode::kAffine, 8, 128},
                                {QuantMode::kAffine, 8, 64}, default_quant_params(QuantMode::kNvfp4),
                                default_quant_params(QuantMode::kMxfp4)};
  uint32_t seed = 5000;
  for (const QuantParams& p : params) {
    for (const auto& [in, out, n_tokens] :
         {std::tuple{128, 1, 1}, {384, 5, 3}, {1152, 301, 1}, {256, 17, 7}, {128, 1024, 24}}) {
      SCOPED_TRACE(describe(p) + " in=" + std::to_string(in) + " out=" + std::to_string(out) + " n=" +
                   std::to_string(n_tokens));
      const std::vector<float> w = normal_values(static_cast<size_t>(in * out), seed++, 0.05f);
      const std::vector<float> x = normal_values(static_cast<size_t>(in * n_tokens), seed++);
      const OwnedQuantized q = quantize_matrix(p, DType::BF16, out, in, w);
      const auto repacked = RepackedMatrix::repack(q.m);
      ASSERT_TRUE(repacked);
      const std::vector<double> expected = reduced_activations_reference(q.m, x, n_tokens);
      std::vector<float> exact(expected.size()), scratch(static_cast<size_t>(in));
      matmul_reference(q.m, x.data(), n_tokens, exact.data());
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        std::vector<float> y(expected.size() + 8, std::numeric_limits<float>::quiet_NaN());
        matmul(pool, *repacked, x.data(), n_tokens, y.data());
        double worst_from_exact = 0;
        for (size_t i = 0; i < expected.size(); ++i) {
          const double mag = magnitude(q.m, x.data() + (i / out) * in, static_cast<int64_t>(i % out), scratch);
          ASSERT_NEAR(y[i], expected[i], (in + 2) * 0x1p-24 * mag * 4 + 1e-6) << "output " << i;
          worst_from_exact = std::max(worst_from_exact, std::abs(y[i] - exact[i]) / (mag + 1e-9));
        }
        for (size_t i = expected.size(); i < y.size(); ++i) ASSERT_TRUE(std::isnan(y[i])) << "wrote past the end";
        // Rounding activations to 8 bits moves each output by well under 1% of sum |x w|, but visibly.
        EXPECT_LT(worst_from_exact, 1e-2);
        EXPECT_GT(worst_from_exact, 1e-5);
      }
    }
  }
}

}  // namespace
}  // namespace ge::kernels
