// The SIMD element-wise ops (tanh-GELU, attention) against plain scalar references, on every Highway
// target this CPU supports; RMSNorm and RoPE against hand-computed values.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "kernels/ggml_blocks.h"
#include "test_util.h"

namespace ge::kernels {
namespace {


const std::byte* as_bytes(const float* p) { return reinterpret_cast<const std::byte*>(p); }

double gelu_tanh_reference(double g) {
  return 0.5 * g * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (g + 0.044715 * g * g * g)));
}

// softmax(scale * q.K) V over positions [first, last], each stored at row p % capacity.
std::vector<double> attend_reference(const std::vector<float>& q, const std::vector<float>& k,
                                     const std::vector<float>& v, int64_t capacity, int64_t stride, int64_t first,
                                     int64_t last, int64_t head_dim, float scale, float softcap) {
  std::vector<double> scores;
  double max_score = -INFINITY;
  for (int64_t p = first; p <= last; ++p) {
    double s = 0;
    for (int64_t d = 0; d < head_dim; ++d) s += static_cast<double>(q[d]) * k[(p % capacity) * stride + d];
    s *= scale;
    scores.push_back(softcap > 0 ? softcap * std::tanh(s / softcap) : s);
    max_score = std::max(max_score, scores.back());
  }
  double total = 0;
  for (double& s : scores) total += (s = std::exp(s - max_score));
  std::vector<double> out(head_dim, 0.0);
  for (int64_t p = first; p <= last; ++p)
    for (int64_t d = 0; d < head_dim; ++d) out[d] += scores[p - first] / total * v[(p % capacity) * stride + d];
  return out;
}

class EveryTarget : public ::testing::Test {
 protected:
  template <class F>
  void for_each_target(F&& body) {
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      SCOPED_TRACE(hwy::TargetName(target));
      hwy::SetSupportedTargetsForTest(target);
      body();
    }
    hwy::SetSupportedTargetsForTest(0);
  }
};

TEST_F(EveryTarget, GeluTanhMulMatchesScalarReference) {
  for_each_target([] {
    for (int64_t n : {1, 7, 16, 33, 1000}) {
      const auto gate = test::normal_values(n, 1, 3.0f), up = test::normal_values(n, 2);
      std::vector<float> out(n);
      gelu_tanh_mul(gate.data(), up.data(), n, out.data());
      for (int64_t i = 0; i < n; ++i) {
        const double expected = gelu_tanh_reference(gate[i]) * up[i];
        ASSERT_NEAR(out[i], expected, 2e-6 * std::max(1.0, std::abs(expected))) << "n=" << n << " i=" << i;
      }
    }
  });
}

TEST_F(EveryTarget, AttendMatchesSoftmaxReferenceAcrossRingWrap) {
  for_each_target([] {
    const int64_t head_dim = 40, heads = 2, stride = heads * head_dim, capacity = 100;
    const auto k = test::normal_values(capacity * stride, 3), v = test::normal_values(capacity * stride, 4);
    const auto q = test::normal_values(head_dim, 5, 2.0f);
    // Spans shorter and longer than one 64-key block, and one that wraps past the end of the ring.
    // Soft-capping at 2 (Gemma 2 style) changes the weights a lot for these scores (|s| up to ~10).
    for (float softcap : {0.0f, 2.0f})
      for (auto [first, last] : {std::pair<int64_t, int64_t>{0, 0}, {3, 70}, {0, 99}, {150, 230}}) {
        std::vector<float> out(head_dim);
        const KVRows rows{as_bytes(k.data() + head_dim), as_bytes(v.data() + head_dim), DType::F32, stride, capacity};
        attend(q.data(), rows, first, last, head_dim, 0.3f, softcap, out.data());
        const std::vector<float> k_head(k.begin() + head_dim, k.end()), v_head(v.begin() + head_dim, v.end());
        const auto expected =
            attend_reference(q, k_head, v_head, capacity, stride, first, last, head_dim, 0.3f, softcap);
        for (int64_t d = 0; d < head_dim; ++d)
          ASSERT_NEAR(out[d], expected[d], 1e-5) << first << ".." << last << " softcap " << softcap;
      }
  });
}

// An f16 cache: the kernel must widen exactly the stored halves, so the reference uses the rounded values.
TEST_F(EveryTarget, AttendReadsHalfPrecisionRows) {
  for_each_target([] {
    const int64_t head_dim = 36, stride = head_dim, capacity = 50;
    auto k = test::normal_values(capacity * stride, 6), v = test::normal_values(capacity * stride, 7);
    std::vector<uint16_t> k16(k.size()), v16(v.size());
    for (size_t i = 0; i < k.size(); ++i) {
      k16[i] = f32_to_f16(k[i]);
      v16[i] = f32_to_f16(v[i]);
      k[i] = f16_to_f32(k16[i]);
      v[i] = f16_to_f32(v16[i]);
    }
    const auto q = test::normal_values(head_dim, 8, 2.0f);
    std::vector<float> out(head_dim);
    const KVRows rows{reinterpret_cast<const std::byte*>(k16.data()), reinterpret_cast<const std::byte*>(v16.data()),
                      DType::F16, stride, capacity};
    attend(q.data(), rows, 20, 90, head_dim, 0.25f, 0.0f, out.data());
    const auto expected = attend_reference(q, k, v, capacity, stride, 20, 90, head_dim, 0.25f, 0.0f);
    for (int64_t d = 0; d < head_dim; ++d) ASSERT_NEAR(out[d], expected[d], 1e-5) << d;
  });
}

Tensor f32_tensor(const std::vector<float>& values) {
  Tensor t;
  t.name = "w";
  t.dtype = DType::F32;
  t.shape = {static_cast<int64_t>(values.size())};
  t.data = reinterpret_cast<const std::byte*>(values.data());
  t.nbytes = values.size() * sizeof(float);
  return t;
}

// The embedding lookup of a quantized GGUF: one row dequantized, times Gemma's sqrt(hidden) scale.
TEST(Ops, DequantizeRowOfBlockQuantizedTensors) {
  const int64_t rows = 3, cols = 96;
  const std::vector<float> values = test::normal_values(rows * cols, 9);
  const float scale = std::sqrt(640.0f);
  for (DType dtype : {DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_info(dtype).name);
    const bool q8 = dtype == DType::Q8_0;
    const size_t row_bytes = *dtype_bytes(dtype, cols);
    std::vector<std::byte> bytes(rows * row_bytes);
    for (int64_t r = 0; r < rows; ++r)
      (q8 ? quantize_row_q8_0 : quantize_row_q4_0)(values.data() + r * cols, cols,
                                                   bytes.data() + r * row_bytes);
    const Tensor t{"embed", dtype, {rows, cols}, bytes.data(), bytes.size()};
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> out(cols), expected(cols);
      dequantize_row(t, r, scale, out.data());
      dequantize_blocks(q8 ? DType::Q8_0 : DType::Q4_0, bytes.data() + r * row_bytes, cols, expected.data());
      for (float& e : expected) e *= scale;
      EXPECT_EQ(out, expected) << "row " << r;
    }
  }
}

TEST(Ops, RmsNormWithGemmaOffsetWeights) {
  const std::vector<float> x = {1, 2, 3, 4, -4, 0, 2, 1}, w = {0.5f, -0.5f, 0.f, 1.f};
  std::vector<float> out(8);
  rms_norm(x.data(), f32_tensor(w), 0.0f, true, 2, 4, out.data());
  const double inv0 = 1 / std::sqrt((1 + 4 + 9 + 16) / 4.0), inv1 = 1 / std::sqrt((16 + 0 + 4 + 1) / 4.0);
  const double expected[] = {1 * inv0 * 1.5, 2 * inv0 * 0.5, 3 * inv0, 4 * inv0 * 2,
                             -4 * inv1 * 1.5, 0, 2 * inv1, 1 * inv1 * 2};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(out[i], expected[i], 1e-6) << i;
  rms_norm(x.data(), f32_tensor(w), 0.0f, false, 1, 4, out.data());
  EXPECT_NEAR(out[0], 1 * inv0 * 0.5, 1e-6);
}

TEST(Ops, RopeRotatesHalfSplitPairs) {
  std::vector<float> x = {1, 2, 3, 4};  // one head of 4: pairs (x0, x2) and (x1, x3)
  const float cos[] = {0.0f, 0.5f}, sin[] = {1.0f, std::sqrt(0.75f)};
  rope_neox(x.data(), 1, 4, cos, sin);
  EXPECT_NEAR(x[0], 1 * 0.0f - 3 * 1.0f, 1e-6);
  EXPECT_NEAR(x[2], 3 * 0.0f + 1 * 1.0f, 1e-6);
  EXPECT_NEAR(x[1], 2 * 0.5f - 4 * std::sqrt(0.75f), 1e-6);
  EXPECT_NEAR(x[3], 4 * 0.5f + 2 * std::sqrt(0.75f), 1e-6);
}

TEST(Ops, SoftCapBoundsLogits) {
  std::vector<float> x = {0.0f, 30.0f, -1000.0f};
  soft_cap(x.data(), 3, 30.0f);
  EXPECT_FLOAT_EQ(x[0], 0.0f);
  EXPECT_NEAR(x[1], 30.0 * std::tanh(1.0), 1e-5);
  EXPECT_NEAR(x[2], -30.0f, 1e-5);
}

}  // namespace
}  // namespace ge::kernels
