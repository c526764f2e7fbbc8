#include "kernels/matmul.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "highway_targets.h"
#include "kernels/bandwidth.h"
#include "kernels/matmul_internal.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace ge::kernels {
namespace {

// A weight tensor that owns its bytes, sized exactly so that an over-read past the last row is a real
// out-of-bounds access (as it would be at the end of an mmapped file).
struct OwnedTensor {
  std::vector<std::byte> bytes;
  Tensor t;
};

uint16_t to_bits(DType dtype, float v) {
  return dtype == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
}

// Quantized rows (cols a multiple of 32) go through the GGUF writer's quantizers.
OwnedTensor make_weights(DType dtype, int64_t rows, int64_t cols, const std::vector<float>& values) {
  OwnedTensor o;
  if (dtype_info(dtype).block_elems > 1) {
    const size_t row_bytes = *dtype_bytes(dtype, cols);
    o.bytes.resize(static_cast<size_t>(rows) * row_bytes);
    const auto quantize = dtype == DType::Q8_0 ? quantize_row_q8_0 : quantize_row_q4_0;
    for (int64_t r = 0; r < rows; ++r)
      quantize(values.data() + r * cols, cols, o.bytes.data() + r * row_bytes);
    o.t = Tensor{"w", dtype, {rows, cols}, o.bytes.data(), o.bytes.size()};
    return o;
  }
  const size_t elem = dtype == DType::F32 ? 4 : 2;
  o.bytes.resize(values.size() * elem);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(o.bytes.data() + i * 4, &values[i], 4);
    } else {
      const uint16_t bits = to_bits(dtype, values[i]);
      std::memcpy(o.bytes.data() + i * 2, &bits, 2);
    }
  }
  o.t = Tensor{"w", dtype, {rows, cols}, o.bytes.data(), o.bytes.size()};
  return o;
}


std::vector<float> abs_values(std::vector<float> v) {
  for (float& f : v) f = std::fabs(f);
  return v;
}

// The f32 value of every stored weight (rounded to f16/bf16, or dequantized), row-major.
std::vector<float> stored_values(const Tensor& w) {
  std::vector<float> v(static_cast<size_t>(w.numel()));
  for (int64_t r = 0; r < w.rows(); ++r) dequantize_row(w, r, 1.0f, v.data() + r * w.cols());
  return v;
}

struct Shape {
  int64_t in, out, n_tokens;
};

std::vector<Shape> test_shapes() {
  std::vector<Shape> shapes;
  // 645 = 640 + 5 leaves a tail on every vector width, and odd widths half a bf16 pair; 7 tokens is a whole
  // 6-token tile plus one. The vdpbf16ps kernel's tiles are 6 rows x 64 tokens in 16-token blocks: 17 rows
  // are 2 tiles and 5 rows left over, 20 tokens one block and a part, 70 a whole tile and a part block.
  for (int64_t in : {1, 7, 34, 645})
    for (int64_t out : {1, 3, 17, 300})
      for (int64_t n_tokens : {1, 2, 7, 20, 64, 70}) shapes.push_back({in, out, n_tokens});
  return shapes;
}

using MatmulFn = std::function<void(ThreadPool&, const Tensor&, const float*, int64_t, float*)>;

// The public entry at each precision, in MatmulFn's shape.
void exact_matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  matmul(pool, w, x, n_tokens, y, Precision::kExact);
}
void reduced_activations_matmul(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  matmul(pool, w, x, n_tokens, y, Precision::kReducedActivations);
}

// Error bound of one output relative to sum_i |x_i w_i|. Summing n f32 terms in any order (SIMD lanes,
// then a horizontal sum) is off by at most (n - 1) * 2^-24 of that sum (Higham, recursive summation),
// plus 2^-24 for rounding the double reference to f32. The 1e-6 absolute term covers sums near 0.
// It holds for Q8_0 and Q4_0 too: their dequantized weights d * q are exact in f32 (11-bit fp16
// significand times a code of at most 8 bits), and the kernels sum the exact products x * (d * q) (one
// token sums q * x per block and scales the block's sum by d inside an FMA: a regrouping, no extra
// rounding of any product).
double tolerance(const Shape& s, double magnitude) {
  const double rel = static_cast<double>(s.in + 1) * 0x1p-24;
  return rel * magnitude + 1e-6;
}

// What the path under test multiplies the weights with, and so what the reference must be given.
enum class Activations { kF32, kRoundedToBf16 };

std::vector<float> rounded_to_bf16(std::vector<float> v) {
  for (float& f : v) f = bf16_to_f32(f32_to_bf16(f));
  return v;
}

// Checks fn against matmul_reference on the given shapes and dtypes, for 1, 2 and 3 threads.
void expect_matches_reference(const MatmulFn& fn, std::initializer_list<DType> dtypes,
                              Activations activations = Activations::kF32,
                              const std::vector<Shape>& shapes = test_shapes()) {
  constexpr size_t kGuard = 16;
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    const std::vector<float> w_values = test::uniform_values(static_cast<size_t>(s.out * s.in), seed++);
    const std::vector<float> x = test::uniform_values(static_cast<size_t>(s.n_tokens * s.in), seed++);
    const std::vector<float> x_ref = activations == Activations::kRoundedToBf16 ? rounded_to_bf16(x) : x;
    const std::vector<float> x_abs = abs_values(x_ref);
    const size_t n_out = static_cast<size_t>(s.n_tokens * s.out);
    for (DType dtype : dtypes) {
      const OwnedTensor w = make_weights(dtype, s.out, s.in, w_values);
      const OwnedTensor w_abs = make_weights(DType::F32, s.out, s.in, abs_values(stored_values(w.t)));
      std::vector<float> expected(n_out), magnitude(n_out);
      matmul_reference(w.t, x_ref.data(), s.n_tokens, expected.data());
      matmul_reference(w_abs.t, x_abs.data(), s.n_tokens, magnitude.data());
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE(testing::Message() << dtype_info(dtype).name << " in=" << s.in << " out=" << s.out
                                        << " n_tokens=" << s.n_tokens << " threads=" << threads);
        ThreadPool pool(threads);
        // NaN everywhere: a skipped output stays NaN, and a write past the end hits the guard.
        std::vector<float> y(n_out + kGuard, std::numeric_limits<float>::quiet_NaN());
        fn(pool, w.t, x.data(), s.n_tokens, y.data());
        for (size_t i = 0; i < n_out; ++i)
          ASSERT_NEAR(y[i], expected[i], tolerance(s, magnitude[i])) << "output " << i;
        for (size_t i = n_out; i < y.size(); ++i) ASSERT_TRUE(std::isnan(y[i])) << "wrote past the end";
      }
    }
  }
}

// Quantized rows are whole 32-weight blocks: 1 block, 3 (an odd number of AVX-512 vector pairs) and a
// Gemma-sized 2048. Rows 5, 17 and 301 leave rows outside the 4-row tiles; 3 and 17 tokens leave a partial
// token tile on every target.
std::vector<Shape> quantized_shapes() {
  std::vector<Shape> shapes;
  for (int64_t in : {32, 96, 2048})
    for (int64_t out : {1, 5, 17, 301})
      for (int64_t n_tokens : {1, 3, 17, 64}) shapes.push_back({in, out, n_tokens});
  return shapes;
}

TEST(Matmul, EveryHighwayTargetMatchesReference) {
  on_every_highway_target([] {
    expect_matches_reference(detail::matmul_highway, {DType::F32, DType::F16, DType::BF16});
  });
}

TEST(Matmul, QuantizedWeightsOnEveryHighwayTargetMatchReference) {
  on_every_highway_target([] {
    expect_matches_reference(detail::matmul_highway, {DType::Q8_0, DType::Q4_0}, Activations::kF32,
                             quantized_shapes());
  });
}

TEST(Matmul, PublicEntryMatchesReference) {
  expect_matches_reference(exact_matmul, {DType::F32, DType::F16, DType::BF16});
  expect_matches_reference(exact_matmul, {DType::Q8_0, DType::Q4_0}, Activations::kF32, quantized_shapes());
}

// A quantized tensor multiplies like the f32 tensor of its dequantized values, up to summation order.
TEST(Matmul, QuantizedWeightsMultiplyAsTheirDequantizedValues) {
  ThreadPool pool(2);
  uint32_t seed = 100;
  for (const Shape& s : std::vector<Shape>{{2048, 301, 1}, {2048, 301, 17}, {96, 5, 64}}) {
    const std::vector<float> x = test::uniform_values(static_cast<size_t>(s.n_tokens * s.in), seed++);
    const std::vector<float> w_values = test::uniform_values(static_cast<size_t>(s.out * s.in), seed++);
    for (DType dtype : {DType::Q8_0, DType::Q4_0}) {
      SCOPED_TRACE(testing::Message() << dtype_info(dtype).name << " in=" << s.in << " out=" << s.out
                                      << " n_tokens=" << s.n_tokens);
      const OwnedTensor quantized = make_weights(dtype, s.out, s.in, w_values);
      const std::vector<float> dequantized = stored_values(quantized.t);
      const OwnedTensor w_f32 = make_weights(DType::F32, s.out, s.in, dequantized);
      const OwnedTensor w_abs = make_weights(DType::F32, s.out, s.in, abs_values(dequantized));
      const size_t n_out = static_cast<size_t>(s.n_tokens * s.out);
      std::vector<float> y(n_out), y_f32(n_out), magnitude(n_out);
      matmul(pool, quantized.t, x.data(), s.n_tokens, y.data());
      matmul(pool, w_f32.t, x.data(), s.n_tokens, y_f32.data());
      matmul_reference(w_abs.t, abs_values(x).data(), s.n_tokens, magnitude.data());
      for (size_t i = 0; i < n_out; ++i)
        ASSERT_NEAR(y[i], y_f32[i], 2 * tolerance(s, magnitude[i])) << "output " << i;
    }
  }
}

constexpr const char* kNoAvx512Bf16 =
    "this CPU lacks AVX512_BF16 (vdpbf16ps), which the kReducedActivations kernel needs";

TEST(Matmul, Bf16ActivationKernelMatchesReferenceOnRoundedActivations) {
  if (!detail::cpu_has_avx512bf16()) GTEST_SKIP() << kNoAvx512Bf16;
  expect_matches_reference(detail::matmul_avx512bf16, {DType::BF16}, Activations::kRoundedToBf16);
}

TEST(Matmul, Bf16ActivationKernelMatchesReferenceOnLargeShapes) {
  if (!detail::cpu_has_avx512bf16()) GTEST_SKIP() << kNoAvx512Bf16;
  // 2049 = 1024 whole pairs and a half one: rows past 1024 pairs are summed in two k blocks. 1000 rows on
  // one thread make tasks of 120 rows, 20 tiles: a group of 16 tiles that share staging, and 4 more.
  expect_matches_reference(detail::matmul_avx512bf16, {DType::BF16}, Activations::kRoundedToBf16,
                           {{2049, 17, 40}, {2049, 1000, 70}});
}

// Runs fn and returns its outputs for a 645 -> 300 product of n_tokens tokens (640 -> 300 for quantized
// weights, whose rows are whole blocks).
std::vector<float> outputs_of(const MatmulFn& fn, DType dtype, int64_t n_tokens) {
  const int64_t in = dtype_info(dtype).block_elems > 1 ? 640 : 645, out = 300;
  const OwnedTensor w = make_weights(dtype, out, in, test::uniform_values(static_cast<size_t>(out * in), 7));
  const std::vector<float> x = test::uniform_values(static_cast<size_t>(n_tokens * in), 8);
  std::vector<float> y(static_cast<size_t>(n_tokens * out));
  ThreadPool pool(2);
  fn(pool, w.t, x.data(), n_tokens, y.data());
  return y;
}

// Without AVX512_BF16 the request falls back to the exact path for every token count.
TEST(Matmul, ReducedActivationsTakeTheBf16KernelOnlyForPrefill) {
  for (int64_t n_tokens : {int64_t{1}, detail::kMinBf16Tokens - 1, detail::kMinBf16Tokens, int64_t{64}}) {
    SCOPED_TRACE(testing::Message() << "n_tokens=" << n_tokens);
    const bool kernel = n_tokens >= detail::kMinBf16Tokens && detail::cpu_has_avx512bf16();
    const MatmulFn expected_path = kernel ? MatmulFn(detail::matmul_avx512bf16) : MatmulFn(exact_matmul);
    EXPECT_EQ(outputs_of(reduced_activations_matmul, DType::BF16, n_tokens),
              outputs_of(expected_path, DType::BF16, n_tokens));
  }
}

// The request is only honoured for BF16, Q8_0 and Q4_0 weights: F32 and F16 weights get the exact path,
// bit for bit.
TEST(Matmul, ReducedActivationsAreExactForOtherWeights) {
  for (DType dtype : {DType::F32, DType::F16}) {
    for (int64_t n_tokens : {int64_t{1}, int64_t{64}}) {
      SCOPED_TRACE(testing::Message() << dtype_info(dtype).name << " n_tokens=" << n_tokens);
      EXPECT_EQ(outputs_of(reduced_activations_matmul, dtype, n_tokens),
                outputs_of(exact_matmul, dtype, n_tokens));
    }
  }
}

// The Q8_0 and Q4_0 weights that the vpdpbusd kernel takes, and the name each gives its tests.
class MatmulVnni : public testing::TestWithParam<DType> {};

std::string dtype_name(const testing::TestParamInfo<DType>& info) {
  return std::string(dtype_info(info.param).name);
}

INSTANTIATE_TEST_SUITE_P(MatmulQuantized, MatmulVnni, testing::Values(DType::Q8_0, DType::Q4_0), dtype_name);

// Without AVX512-VNNI the request falls back to the exact path for every token count.
TEST_P(MatmulVnni, ReducedActivationsTakeTheKernelOnlyForPrefill) {
  const DType dtype = GetParam();
  for (int64_t n_tokens : {int64_t{1}, detail::kMinVnniTokens - 1, detail::kMinVnniTokens, int64_t{64}}) {
    SCOPED_TRACE(testing::Message() << "n_tokens=" << n_tokens);
    const bool kernel = n_tokens >= detail::kMinVnniTokens && detail::cpu_has_avx512vnni();
    const MatmulFn expected_path = kernel ? MatmulFn(detail::matmul_vnni) : MatmulFn(exact_matmul);
    EXPECT_EQ(outputs_of(reduced_activations_matmul, dtype, n_tokens),
              outputs_of(expected_path, dtype, n_tokens));
  }
}

constexpr const char* kNoAvx512Vnni =
    "this CPU lacks AVX512-VNNI (vpdpbusd), which the Q8_0 and Q4_0 kReducedActivations kernel needs";

// A block's scale and its 32 codes as signed integers (Q4_0: q - 8), decoded from the stored bytes.
struct CodeBlock {
  double d;
  std::array<int8_t, kQuantBlock> codes;
};

CodeBlock code_block(DType dtype, const std::byte* row, int64_t block) {
  const size_t block_bytes = dtype == DType::Q8_0 ? kQ8_0BlockBytes : kQ4_0BlockBytes;
  const std::byte* p = row + static_cast<size_t>(block) * block_bytes;
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  CodeBlock out{f16_to_f32(bits), {}};
  if (dtype == DType::Q8_0) {
    std::memcpy(out.codes.data(), p + 2, kQuantBlock);
    return out;
  }
  constexpr int64_t kHalf = kQuantBlock / 2;
  for (int64_t j = 0; j < kHalf; ++j) {
    const auto byte = std::to_integer<int>(p[2 + j]);
    out.codes[j] = static_cast<int8_t>((byte & 0x0F) - 8);
    out.codes[j + kHalf] = static_cast<int8_t>((byte >> 4) - 8);
  }
  return out;
}

// What the vpdpbusd kernel computes, in scalar arithmetic and double sums: each token's activations
// quantized by quantize_row_q8_0, then d_w * d_x * (integer dot of the codes) per block pair. `magnitude`
// receives the sums of |d_w * d_x * dot|, which bound the kernel's f32 rounding.
void q8_0_activations_reference(const Tensor& w, const float* x, int64_t n_tokens, std::vector<double>& y,
                                std::vector<double>& magnitude) {
  const int64_t rows = w.rows(), cols = w.cols(), blocks = cols / kQuantBlock;
  const size_t x_row_bytes = static_cast<size_t>(blocks) * kQ8_0BlockBytes;
  std::vector<std::byte> xq(static_cast<size_t>(n_tokens) * x_row_bytes);
  for (int64_t t = 0; t < n_tokens; ++t) quantize_row_q8_0(x + t * cols, cols, xq.data() + t * x_row_bytes);
  y.assign(static_cast<size_t>(n_tokens * rows), 0.0);
  magnitude.assign(y.size(), 0.0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t o = 0; o < rows; ++o) {
      for (int64_t b = 0; b < blocks; ++b) {
        const CodeBlock wb = code_block(w.dtype, w.row(o), b);
        const CodeBlock xb = code_block(DType::Q8_0, xq.data() + t * x_row_bytes, b);
        int64_t dot = 0;
        for (int64_t j = 0; j < kQuantBlock; ++j) dot += int64_t{wb.codes[j]} * xb.codes[j];
        const double term = wb.d * xb.d * static_cast<double>(dot);
        y[t * rows + o] += term;
        magnitude[t * rows + o] += std::fabs(term);
      }
    }
  }
}

// Bound on |exact - quantized| for one output, from the activations' rounding: a block with largest
// magnitude m gets the scale d = m / 127 (stored as fp16, relative error <= 2^-11), so each code is off by
// at most d / 2 and each |code| <= 127 adds 127 * d * 2^-11 for the scale: 0.563 d per activation, times
// the sum of |w| over the block.
double activation_rounding_bound(const float* w_row, const float* x_row, int64_t cols) {
  double bound = 0;
  for (int64_t b = 0; b < cols; b += kQuantBlock) {
    double amax = 0, w_abs = 0;
    for (int64_t j = b; j < b + kQuantBlock; ++j) {
      amax = std::max(amax, static_cast<double>(std::fabs(x_row[j])));
      w_abs += std::fabs(w_row[j]);
    }
    bound += (0.5 + 127 * 0x1p-11) * (amax / 127) * w_abs * (1 + 0x1p-10);
  }
  return bound;
}

// Activations that put the quantizer's rounding to the test: per block, one value at 127 fixes the scale
// at exactly 1, and the others are k + 0.5 (ties, rounded away from zero by quantize_row_q8_0), plus
// blocks of zeros (scale 0).
std::vector<float> tie_activations(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t in_block = i % kQuantBlock, block = i / kQuantBlock;
    if (block % 5 == 4) continue;
    v[i] = in_block == 0 ? 127.0f : static_cast<float>(static_cast<int>(i % 101) - 50) + 0.5f;
  }
  return v;
}

enum class Q8_0Activations { kRandom, kTies };

// Sets some weight codes to the format's extremes: Q8_0's -128, which quantize_row_q8_0 never writes but
// a GGUF may hold; Q4_0's 15 and 0 (7 and -8) side by side in one byte.
void set_extreme_codes(DType dtype, std::vector<std::byte>& bytes) {
  const size_t block_bytes = dtype == DType::Q8_0 ? kQ8_0BlockBytes : kQ4_0BlockBytes;
  const std::byte extreme = dtype == DType::Q8_0 ? std::byte{0x80} : std::byte{0x0F};
  for (size_t i = 2; i < bytes.size(); i += 97)
    if (i % block_bytes >= 2) bytes[i] = extreme;
}

// Checks matmul_vnni on dtype weights against q8_0_activations_reference (f32 rounding only) and against
// exact matmul_reference (plus the activation rounding bound), for 1, 2 and 3 threads.
void expect_vnni_kernel_matches_references(DType dtype, const std::vector<Shape>& shapes,
                                           Q8_0Activations kind) {
  constexpr size_t kGuard = 16;
  uint32_t seed = 300;
  for (const Shape& s : shapes) {
    const std::vector<float> w_values = test::uniform_values(static_cast<size_t>(s.out * s.in), seed++);
    const size_t n_x = static_cast<size_t>(s.n_tokens * s.in);
    const std::vector<float> x = kind == Q8_0Activations::kTies ? tie_activations(n_x) : test::uniform_values(n_x, seed++);
    OwnedTensor w = make_weights(dtype, s.out, s.in, w_values);
    set_extreme_codes(dtype, w.bytes);
    const std::vector<float> w_stored = stored_values(w.t);
    const OwnedTensor w_abs = make_weights(DType::F32, s.out, s.in, abs_values(w_stored));
    const size_t n_out = static_cast<size_t>(s.n_tokens * s.out);
    std::vector<double> same_arithmetic, same_magnitude;
    q8_0_activations_reference(w.t, x.data(), s.n_tokens, same_arithmetic, same_magnitude);
    std::vector<float> exact(n_out), exact_magnitude(n_out);
    matmul_reference(w.t, x.data(), s.n_tokens, exact.data());
    matmul_reference(w_abs.t, abs_values(x).data(), s.n_tokens, exact_magnitude.data());
    const double f32_rel = static_cast<double>(s.in / kQuantBlock + 3) * 0x1p-24;
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(testing::Message() << "in=" << s.in << " out=" << s.out << " n_tokens=" << s.n_tokens
                                      << " threads=" << threads);
      ThreadPool pool(threads);
      std::vector<float> y(n_out + kGuard, std::numeric_limits<float>::quiet_NaN());
      detail::matmul_vnni(pool, w.t, x.data(), s.n_tokens, y.data());
      for (size_t i = 0; i < n_out; ++i) {
        ASSERT_NEAR(y[i], same_arithmetic[i], f32_rel * same_magnitude[i] + 1e-6) << "output " << i;
        const int64_t t = static_cast<int64_t>(i) / s.out, o = static_cast<int64_t>(i) % s.out;
        const double bound =
            activation_rounding_bound(w_stored.data() + o * s.in, x.data() + t * s.in, s.in) +
            tolerance(s, exact_magnitude[i]) + f32_rel * same_magnitude[i];
        ASSERT_NEAR(y[i], exact[i], bound) << "output " << i << " against the exact product";
      }
      for (size_t i = n_out; i < y.size(); ++i) ASSERT_TRUE(std::isnan(y[i])) << "wrote past the end";
    }
  }
}

TEST_P(MatmulVnni, KernelMatchesReferences) {
  if (!detail::cpu_has_avx512vnni()) GTEST_SKIP() << kNoAvx512Vnni;
  // Beyond quantized_shapes(): 70 and 130 tokens leave partial 64-token tiles after whole ones.
  std::vector<Shape> shapes = quantized_shapes();
  shapes.push_back({2048, 301, 70});
  shapes.push_back({96, 17, 130});
  expect_vnni_kernel_matches_references(GetParam(), shapes, Q8_0Activations::kRandom);
}

TEST_P(MatmulVnni, KernelRoundsTiesAndZeroBlocksAsQuantizeRow) {
  if (!detail::cpu_has_avx512vnni()) GTEST_SKIP() << kNoAvx512Vnni;
  expect_vnni_kernel_matches_references(GetParam(), {{160, 17, 20}, {2048, 5, 64}}, Q8_0Activations::kTies);
}

TEST(Matmul, ExactForExactlyRepresentableProducts) {
  // Small integers: every product and partial sum is exact in f32, so any path must match bit for bit.
  const int64_t in = 70, out = 5;
  std::vector<float> w_values(static_cast<size_t>(in * out)), x(static_cast<size_t>(in));
  for (size_t i = 0; i < w_values.size(); ++i) w_values[i] = static_cast<float>(static_cast<int>(i % 7) - 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 5) - 2);
  ThreadPool pool(2);
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const OwnedTensor w = make_weights(dtype, out, in, w_values);
    std::vector<float> y(out), expected(out);
    matmul(pool, w.t, x.data(), 1, y.data());
    matmul_reference(w.t, x.data(), 1, expected.data());
    EXPECT_EQ(y, expected) << dtype_info(dtype).name;
  }
}

TEST(Matmul, RejectsUnsupportedWeights) {
  ThreadPool pool(1);
  const std::vector<std::byte> bytes(68);
  std::vector<float> x(48), y(1);
  // I32 is no weight type; 48 columns of Q8_0 would end in half a block.
  for (const Tensor& w : {Tensor{"i", DType::I32, {1, 16}, bytes.data(), 64},
                          Tensor{"q", DType::Q8_0, {1, 48}, bytes.data(), bytes.size()}}) {
    SCOPED_TRACE(w.name);
    EXPECT_THROW(matmul(pool, w, x.data(), 1, y.data()), std::invalid_argument);
    EXPECT_THROW(matmul_reference(w, x.data(), 1, y.data()), std::invalid_argument);
  }
}

TEST(Matmul, NamesItsTarget) {
  EXPECT_GT(std::string(matmul_target()).size(), 0u);
}

// matmul's roofline lives next to it; 64 MiB keeps the test fast (the figure is then partly cache).
TEST(ReadBandwidth, MeasuresAPositiveRate) {
  ThreadPool pool(2);
  const double gbs = measure_read_bandwidth_gbs(pool, size_t{64} << 20);
  EXPECT_GT(gbs, 0.1);
  EXPECT_LT(gbs, 1e5);
}

}  // namespace
}  // namespace ge::kernels
