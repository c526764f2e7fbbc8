// gemm() against a plain triple loop in double: odd sizes around the microkernel's tile (6 rows x 2 vectors)
// and its k and column blocks, both layouts of w, every weight dtype, sub-matrix views, accumulation, one
// and several threads, on every Highway target this CPU supports.
#include "kernels/gemm.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "highway_targets.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace ge::kernels {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();


// The f32 value that v has once stored as dtype.
float stored(DType dtype, float v) {
  if (dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  if (dtype == DType::F16) return f16_to_f32(f32_to_f16(v));
  return v;
}

// The logical B [k, n] stored as w: [n, k] (w_k_major = false) or [k, n], rows `stride` elements apart. The
// elements between cols and stride are NaN, so a kernel that reads outside the view poisons its outputs.
struct StoredMatrix {
  std::vector<std::byte> bytes;
  MatrixView view;
};

StoredMatrix store_b(DType dtype, const std::vector<float>& b, int64_t k, int64_t n, bool k_major,
                     int64_t pad) {
  StoredMatrix s;
  const int64_t rows = k_major ? k : n, cols = k_major ? n : k, stride = cols + pad;
  const size_t elem = dtype == DType::F32 ? 4 : 2;
  s.bytes.resize(static_cast<size_t>(rows * stride) * elem);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < stride; ++c) {
      const float v = c < cols ? (k_major ? b[r * n + c] : b[c * n + r]) : kNaN;
      std::byte* out = s.bytes.data() + static_cast<size_t>(r * stride + c) * elem;
      if (dtype == DType::F32) {
        std::memcpy(out, &v, 4);
      } else {
        const uint16_t bits = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(out, &bits, 2);
      }
    }
  }
  s.view = MatrixView{s.bytes.data(), dtype, rows, cols, stride};
  return s;
}

// One product to check: y (+)= x B with x [m, k] (row stride ldx) and y [m, n] (row stride ldy).
struct Case {
  int64_t m, n, k;
  int64_t pad;  // extra elements per row of x, y and w: 0 for dense operands
};

// How gemm is called: the single-threaded entry, or the pooled one with this many threads.
struct Call {
  int threads;  // 0: single-threaded entry; otherwise 2 or 3
  bool accumulate;
};

// Pools are made once: thousands of calls would otherwise spend most of their time starting threads.
ThreadPool& pool_of(int threads) {
  static ThreadPool two(2), three(3);
  return threads == 2 ? two : three;
}

// Runs gemm on c for every dtype, layout, call and (every_target) Highway target this CPU supports, and
// checks each output against sum_p x B in double, to within the error of summing k + 1 f32 terms (Higham:
// (k + 1) * 2^-24 of sum |terms|), and that nothing outside the m x n view of y changed.
void expect_gemm_matches_reference(const Case& c, const std::vector<Call>& calls, uint32_t seed,
                                   bool every_target = false) {
  std::vector<int64_t> targets = {0};  // 0: the best target, as dispatched normally
  if (every_target) targets = hwy::SupportedAndGeneratedTargets();
  const int64_t ldx = c.k + c.pad, ldy = c.n + c.pad;
  std::vector<float> x = test::uniform_values(static_cast<size_t>(c.m * ldx), seed);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t p = c.k; p < ldx; ++p) x[i * ldx + p] = kNaN;
  const std::vector<float> b_values = test::uniform_values(static_cast<size_t>(c.k * c.n), seed + 1);
  const std::vector<float> y0 = test::uniform_values(static_cast<size_t>(c.m * ldy), seed + 2);
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    std::vector<float> b_stored(b_values.size());
    for (size_t i = 0; i < b_values.size(); ++i) b_stored[i] = stored(dtype, b_values[i]);
    std::vector<double> sum(static_cast<size_t>(c.m * c.n)), magnitude(sum.size());
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double s = 0, a = 0;
        for (int64_t p = 0; p < c.k; ++p) {
          const double term = static_cast<double>(x[i * ldx + p]) * b_stored[p * c.n + j];
          s += term;
          a += std::fabs(term);
        }
        sum[i * c.n + j] = s;
        magnitude[i * c.n + j] = a;
      }
    for (bool k_major : {false, true}) {
      const StoredMatrix w = store_b(dtype, b_values, c.k, c.n, k_major, c.pad);
      for (const Call& call : calls) {
        for (int64_t target : targets) {
          ForceHighwayTarget force(target);
          SCOPED_TRACE(testing::Message()
                       << (target ? hwy::TargetName(target) : "best") << " " << dtype_info(dtype).name
                       << " m=" << c.m << " n=" << c.n << " k=" << c.k << " pad=" << c.pad
                       << (k_major ? " k-major" : " [n, k]") << " threads=" << call.threads
                       << " accumulate=" << call.accumulate);
          std::vector<float> y = y0;
          if (call.threads == 0) {
            gemm(x.data(), ldx, c.m, w.view, k_major, y.data(), ldy, call.accumulate);
          } else {
            gemm(pool_of(call.threads), x.data(), ldx, c.m, w.view, k_major, y.data(), ldy, call.accumulate);
          }
          for (int64_t i = 0; i < c.m; ++i) {
            for (int64_t j = 0; j < ldy; ++j) {
              const size_t at = static_cast<size_t>(i * ldy + j);
              if (j >= c.n) {
                ASSERT_EQ(y[at], y0[at]) << "wrote outside the view at row " << i << " column " << j;
                continue;
              }
              const double base = call.accumulate ? y0[at] : 0.0;
              const double bound =
                  static_cast<double>(c.k + 1) * 0x1p-24 * (std::fabs(base) + magnitude[i * c.n + j]) + 1e-30;
              ASSERT_NEAR(y[at], base + sum[i * c.n + j], bound) << "y[" << i << ", " << j << "]";
            }
          }
        }
      }
    }
  }
}

// m around the 6-row tile (and 300: 50 tiles, split over threads), n around the 16-column panel of AVX2
// (8 on SSE4, 32 on AVX-512; 300 is two 256-column blocks), k around 4-wide transposes and 256-deep blocks.
TEST(Gemm, MatchesReferenceOnEveryTarget) {
  uint32_t seed = 1;
  for (int64_t m : {1, 5, 6, 7, 13, 64, 300})
    for (int64_t n : {1, 15, 16, 17, 40, 129, 300})
      for (int64_t k : {1, 7, 72, 257, 600}) {
        // Sub-matrix views on every other shape; threads and accumulation vary per call.
        const Case c{m, n, k, seed % 2 == 0 ? 3 : 0};
        expect_gemm_matches_reference(c, {{0, false}, {0, true}, {2, false}, {3, true}}, seed, true);
        seed += 3;
        if (HasFatalFailure()) return;
      }
  if (const std::string skipped = unsupported_highway_targets(); !skipped.empty())
    std::cout << "[   INFO   ] Highway targets this CPU cannot run, not tested: " << skipped << "\n";
}

// Attention shapes as the vision tower runs them: S = Q K^T (k = 72) and O = P V (V k-major, k = 4096).
TEST(Gemm, MatchesReferenceOnAttentionShapes) {
  expect_gemm_matches_reference({64, 520, 72, 5}, {{0, false}, {2, true}}, 11);
  expect_gemm_matches_reference({37, 72, 4096, 0}, {{0, false}, {2, true}}, 12);
}

// Every output is summed over k in the same order whatever the split over threads: results are
// reproducible bit for bit across thread counts.
TEST(Gemm, ResultsDoNotDependOnThreads) {
  const int64_t m = 300, n = 600, k = 600;
  const std::vector<float> x = test::uniform_values(static_cast<size_t>(m * k), 21);
  const StoredMatrix w = store_b(DType::BF16, test::uniform_values(static_cast<size_t>(k * n), 22), k, n, false, 0);
  std::vector<float> single(static_cast<size_t>(m * n));
  gemm(x.data(), k, m, w.view, false, single.data(), n);
  for (int threads : {1, 2, 3, 4}) {
    SCOPED_TRACE(testing::Message() << "threads=" << threads);
    ThreadPool pool(threads);
    std::vector<float> y(single.size(), kNaN);
    gemm(pool, x.data(), k, m, w.view, false, y.data(), n);
    EXPECT_EQ(y, single);
  }
}

TEST(Gemm, EmptySumWritesZerosOrLeavesYUnchanged) {
  const MatrixView w{nullptr, DType::F32, 3, 0, 0};  // [n = 3, k = 0]
  std::vector<float> y(6, 1.5f);
  gemm(nullptr, 0, 2, w, false, y.data(), 3, true);
  EXPECT_EQ(y, std::vector<float>(6, 1.5f));
  gemm(nullptr, 0, 2, w, false, y.data(), 3);
  EXPECT_EQ(y, std::vector<float>(6, 0.0f));
}

TEST(Gemm, RejectsOtherDtypesAndShortStrides) {
  std::vector<float> x(16), y(16), w_data(16);
  EXPECT_THROW(gemm(x.data(), 4, 4, MatrixView{w_data.data(), DType::Q8_0, 4, 4, 4}, false, y.data(), 4),
               std::invalid_argument);
  EXPECT_THROW(gemm(x.data(), 4, 4, MatrixView{w_data.data(), DType::F32, 4, 4, 3}, false, y.data(), 4),
               std::invalid_argument);
  EXPECT_THROW(gemm(x.data(), 3, 4, MatrixView{w_data.data(), DType::F32, 4, 4, 4}, false, y.data(), 4),
               std::invalid_argument);
}

// matmul() hands exact products of min_gemm_tokens or more to gemm, fewer to the dot-product kernels.
TEST(Gemm, MatmulTakesGemmForLargeBatches) {
  ThreadPool pool(2);
  const int64_t rows = 40, cols = 257;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    const std::vector<float> values = test::uniform_values(static_cast<size_t>(rows * cols), 31);
    // A Linear weight [out, in] is gemm's w with w_k_major = false; store_b takes B = w^T.
    std::vector<float> b(values.size());
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < cols; ++i) b[i * rows + o] = values[o * cols + i];
    const StoredMatrix w = store_b(dtype, b, cols, rows, false, 0);
    const Tensor t{"w", dtype, {rows, cols}, static_cast<const std::byte*>(w.view.data), w.bytes.size()};
    const int64_t min_tokens = detail::min_gemm_tokens(dtype);
    for (int64_t n_tokens : {min_tokens - 1, min_tokens, int64_t{100}}) {
      SCOPED_TRACE(testing::Message() << dtype_info(dtype).name << " n_tokens=" << n_tokens);
      const std::vector<float> x = test::uniform_values(static_cast<size_t>(n_tokens * cols), 32);
      std::vector<float> y(static_cast<size_t>(n_tokens * rows)), expected(y.size());
      matmul(pool, t, x.data(), n_tokens, y.data());
      if (n_tokens >= min_tokens)
        gemm(x.data(), cols, n_tokens, w.view, false, expected.data(), rows);
      else
        detail::matmul_highway(pool, t, x.data(), n_tokens, expected.data());
      EXPECT_EQ(y, expected);
    }
  }
}

}  // namespace
}  // namespace ge::kernels
