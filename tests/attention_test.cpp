// Whole-sequence attention as GEMMs (the vision tower's) against a float64 softmax(QK^T)V, on odd sizes and
// every SIMD target.
#include <gtest/gtest.h>

#include <cmath>

#include "highway_targets.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "test_util.h"

namespace ge::kernels {
namespace {

std::vector<double> attend_all_reference(const std::vector<float>& q, const std::vector<float>& k,
                                         const std::vector<float>& v, int64_t n, int64_t heads, int64_t hd,
                                         double scale) {
  const int64_t width = heads * hd;
  std::vector<double> out(static_cast<size_t>(n * width));
  std::vector<double> s(static_cast<size_t>(n));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < n; ++i) {
      double max = -1e300, sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < hd; ++c) dot += double(q[i * width + h * hd + c]) * k[j * width + h * hd + c];
        s[j] = dot * scale;
        max = std::max(max, s[j]);
      }
      for (int64_t j = 0; j < n; ++j) sum += s[j] = std::exp(s[j] - max);
      for (int64_t c = 0; c < hd; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < n; ++j) acc += s[j] * v[j * width + h * hd + c];
        out[i * width + h * hd + c] = acc / sum;
      }
    }
  return out;
}

// 300 tokens: one full block of 256 queries and a partial one; head_dim 72 as SigLIP's.
TEST(AttendAll, MatchesSoftmaxOfQKTimesVOnEveryTarget) {
  ThreadPool pool(2);
  const int64_t n = 300, heads = 3, hd = 72, width = heads * hd;
  const auto q = test::normal_values(n * width, 1), k = test::normal_values(n * width, 2),
             v = test::normal_values(n * width, 3);
  const double scale = 1.0 / std::sqrt(double(hd));
  const auto expected = attend_all_reference(q, k, v, n, heads, hd, scale);
  on_every_highway_target([&] {
    std::vector<float> out(static_cast<size_t>(n * width), -1.0f);
    attend_all(pool, q.data(), k.data(), v.data(), n, heads, hd, static_cast<float>(scale), out.data());
    double worst = 0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(out[i] - expected[i]));
    EXPECT_LT(worst, 1e-5);
  });
}

TEST(AttendAll, SoftmaxRowsSumToOneAndKeepOrder) {
  std::vector<float> s = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0.5f, -3, 100, 100, 99, 0, 0, 0, 0, 0, 0};
  softmax_rows(s.data(), 2, 11, 11, 0.5f);
  for (int r = 0; r < 2; ++r) {
    double sum = 0;
    for (int i = 0; i < 11; ++i) sum += s[r * 11 + i];
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
  EXPECT_NEAR(s[10] / s[9], std::exp(0.5), 1e-5);
  EXPECT_NEAR(s[13], s[14], 1e-7);  // 100 and 100: no overflow, equal weights
}

// attend_rows (a prompt chunk's queries in one tile) gives what attend gives query by query: over a ring
// that wraps inside the keys the tile sees (gathered) and one that does not (read in place), in f32 and
// f16, with and without soft-capping, each query with its own key range (sliding window, an image block).
TEST(AttendRows, MatchesPerQueryAttention) {
  constexpr int64_t kHeadDim = 40, kStride = 3 * kHeadDim, kCapacity = 50, kQueries = 13;
  const auto q = test::normal_values(kQueries * 2 * kHeadDim, 1);
  const auto k = test::normal_values(kCapacity * kStride, 2), v = test::normal_values(kCapacity * kStride, 3);
  std::vector<uint16_t> k16(k.size()), v16(v.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k16[i] = f32_to_f16(k[i]);
    v16[i] = f32_to_f16(v[i]);
  }
  for (int64_t start : {30, 60}) {  // positions start..start+12: 60 wraps the 50-row ring inside the tile
    std::vector<int64_t> first(kQueries), last(kQueries);
    for (int64_t i = 0; i < kQueries; ++i) {
      last[i] = i >= 3 && i < 7 ? start + 6 : start + i;  // queries 3-6: one image block
      first[i] = std::max<int64_t>(0, std::min(start + std::min<int64_t>(i, 3), start + i - 20));
    }
    for (bool half : {false, true}) {
      const KVRows kv = half ? KVRows{reinterpret_cast<const std::byte*>(k16.data() + kHeadDim),
                                      reinterpret_cast<const std::byte*>(v16.data() + kHeadDim), DType::F16, kStride,
                                      kCapacity}
                             : KVRows{reinterpret_cast<const std::byte*>(k.data() + kHeadDim),
                                      reinterpret_cast<const std::byte*>(v.data() + kHeadDim), DType::F32, kStride,
                                      kCapacity};
      for (float softcap : {0.0f, 2.0f}) {
        std::vector<float> got(kQueries * 2 * kHeadDim), expected(got.size());
        attend_rows(q.data(), 2 * kHeadDim, kQueries, kv, first.data(), last.data(), kHeadDim, 0.2f, softcap,
                    got.data(), 2 * kHeadDim);
        for (int64_t i = 0; i < kQueries; ++i)
          attend(q.data() + i * 2 * kHeadDim, kv, first[i], last[i], kHeadDim, 0.2f, softcap,
                 expected.data() + i * 2 * kHeadDim);
        for (int64_t i = 0; i < kQueries; ++i)
          for (int64_t c = 0; c < kHeadDim; ++c)
            ASSERT_NEAR(got[i * 2 * kHeadDim + c], expected[i * 2 * kHeadDim + c], 2e-5)
                << "start " << start << (half ? " f16" : " f32") << " softcap " << softcap << " query " << i;
      }
    }
  }
}

}  // namespace
}  // namespace ge::kernels
