// The Gemma decoder (Gemma 1, 2, 3) against the float64 reference of each fixture (logits and every layer's
// residual stream), chunked prefill against one-token steps, and the checks made at load.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <hwy/targets.h>

#include "formats/safetensors.h"
#include "kernels/thread_pool.h"
#include "loader/model_loader.h"
#include "models/gemma/model.h"
#include "test_util.h"

namespace ge {
namespace {

using test::fixture_model_dir;
using test::fixture_reference_dir;

constexpr float kLogitTolerance = 1e-3f;   // the bar; an f32 engine lands near 1e-5
constexpr float kChunkTolerance = 1e-4f;   // chunked prefill vs one token at a time

struct Fixture {
  explicit Fixture(const std::string& name, int64_t max_chunk = 256)
      : ckpt(fixture_model_dir(name)),
        model(loader::load_config(fixture_model_dir(name)), ckpt, max_chunk),
        reference(test::read_json(fixture_reference_dir(name) / "reference.json")),
        ids(reference["token_ids"].get<std::vector<int32_t>>()) {}

  std::vector<float> logits(kernels::ThreadPool& pool, int64_t n_positions,
                            const models::HiddenObserver* observer = nullptr) {
    std::vector<float> out(n_positions * model.shape().vocab_size);
    auto cache = model.make_cache(n_positions);
    model.forward(std::span(ids).first(n_positions), 0, cache, pool, out.data(), true, observer);
    return out;
  }

  formats::SafetensorsCheckpoint ckpt;
  gemma::Model model;
  nlohmann::json reference;
  std::vector<int32_t> ids;
};

class GemmaReference : public ::testing::TestWithParam<std::string> {};

TEST_P(GemmaReference, LogitsMatchAtEveryPosition) {
  kernels::ThreadPool pool(2);
  Fixture f(GetParam());
  const auto expected = test::read_f32(fixture_reference_dir(GetParam()) / "reference_logits.f32");
  const auto got = f.logits(pool, static_cast<int64_t>(f.ids.size()));
  ASSERT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  std::printf("%s: max |logit - reference| = %.3g\n", GetParam().c_str(), diff);
  EXPECT_LT(diff, kLogitTolerance);
}

TEST_P(GemmaReference, EveryLayerMatchesTheReferenceResidualStream) {
  kernels::ThreadPool pool(2);
  Fixture f(GetParam());
  const auto expected = test::read_f32(fixture_reference_dir(GetParam()) / "reference_hidden.f32");
  const int64_t n = static_cast<int64_t>(f.ids.size()), hidden = f.model.shape().hidden_size;
  ASSERT_EQ(expected.size(), static_cast<size_t>((f.model.config().num_layers + 1) * n * hidden));
  int64_t seen = 0;
  models::HiddenObserver observer = [&](int64_t index, const float* h, int64_t start, int64_t count) {
    ASSERT_EQ(start, 0);
    ASSERT_EQ(count, n);
    const float diff = test::max_abs_diff(h, expected.data() + index * n * hidden, n * hidden);
    // The first layer that drifts names itself; later ones would only inherit its error.
    EXPECT_LT(diff, kLogitTolerance) << "residual stream diverges at index " << index
                                     << (index ? " (after layer " + std::to_string(index - 1) + ")" : " (embedding)");
    ++seen;
  };
  f.logits(pool, n, &observer);
  EXPECT_EQ(seen, f.model.config().num_layers + 1);
}

// The whole forward pass on every SIMD target this CPU has (an AVX2-only machine runs the AVX2 one).
TEST(GemmaTargets, EveryHighwayTargetReproducesTheReference) {
  kernels::ThreadPool pool(2);
  Fixture f("gemma2-tiny");
  const auto expected = test::read_f32(fixture_reference_dir("gemma2-tiny") / "reference_logits.f32");
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const auto got = f.logits(pool, static_cast<int64_t>(f.ids.size()));
    EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), kLogitTolerance) << hwy::TargetName(target);
  }
  hwy::SetSupportedTargetsForTest(0);
}

// An f16 cache halves the memory; the fixtures' README puts such engines within ~1e-2 with the same top-1.
TEST_P(GemmaReference, HalfPrecisionCacheStaysCloseWithTheSameTopToken) {
  kernels::ThreadPool pool(2);
  Fixture f(GetParam(), 5);
  const auto expected = test::read_f32(fixture_reference_dir(GetParam()) / "reference_logits.f32");
  const int64_t n = static_cast<int64_t>(f.ids.size()), vocab = f.model.shape().vocab_size;
  std::vector<float> got(n * vocab);
  auto cache = f.model.make_cache(n, DType::F16);
  EXPECT_EQ(cache.bytes(), f.model.make_cache(n).bytes() / 2);
  f.model.forward(f.ids, 0, cache, pool, got.data(), true);
  EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), 1e-2f);
  for (int64_t i = 0; i < n; ++i) {
    const auto top = [&](const float* row) { return std::max_element(row, row + vocab) - row; };
    EXPECT_EQ(top(got.data() + i * vocab), top(expected.data() + i * vocab)) << "position " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GemmaReference,
                         ::testing::Values("gemma3-tiny", "gemma3-tiny-rope", "gemma-tiny", "gemma2-tiny"));

// The text positions before the image of the multimodal fixture exercise the sparse text_config defaults.
TEST(Gemma3Vision, TextPrefixMatchesReferenceWithDefaultsFilledIn) {
  kernels::ThreadPool pool(2);
  Fixture f("gemma3-tiny-vision");
  EXPECT_EQ(f.model.shape().vocab_size, 1088);
  EXPECT_EQ(f.model.config().layers[5].sliding, false);
  EXPECT_DOUBLE_EQ(f.model.config().layers[5].rope_base, 1e6);
  EXPECT_DOUBLE_EQ(f.model.config().layers[0].rope_base, 1e4);
  const int64_t text_positions = 6;
  const auto expected = test::read_f32(fixture_reference_dir("gemma3-tiny-vision") / "reference_logits.f32");
  const auto got = f.logits(pool, text_positions);
  EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), kLogitTolerance);
}

// Prefill in chunks (smaller than, equal to and larger than the 8-token window, so the ring wraps inside
// a chunk) must give the logits of feeding one token at a time: Gemma 3 (every 6th layer global) and
// Gemma 2 (even layers sliding, soft-capped attention).
class GemmaChunking : public ::testing::TestWithParam<std::string> {};

TEST_P(GemmaChunking, ChunkedPrefillEqualsStepwiseDecoding) {
  kernels::ThreadPool pool(2);
  Fixture stepwise(GetParam(), 1);
  const int64_t n = static_cast<int64_t>(stepwise.ids.size()), vocab = stepwise.model.shape().vocab_size;
  ASSERT_GT(n, 2 * stepwise.model.config().sliding_window);
  std::vector<float> expected(n * vocab);
  auto cache = stepwise.model.make_cache(n);
  for (int64_t i = 0; i < n; ++i)
    stepwise.model.forward(std::span(stepwise.ids).subspan(i, 1), i, cache, pool, expected.data() + i * vocab, true);

  for (int64_t chunk : {3, 5, 8, 11, 20, 256}) {
    Fixture f(GetParam(), chunk);
    const auto got = f.logits(pool, n);
    EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), kChunkTolerance) << "chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GemmaChunking, ::testing::Values("gemma3-tiny", "gemma2-tiny"));

TEST(Gemma3Chunking, SlidingRingHoldsWindowPlusChunk) {
  Fixture f("gemma3-tiny", 16);
  auto cache = f.model.make_cache(32768);
  EXPECT_EQ(cache.capacity(0), 8 + 16 - 1);  // sliding
  EXPECT_EQ(cache.capacity(5), 32768);       // global
}

TEST(Gemma3Errors, TokenIdPastTheEmbeddingTableIsRejected) {
  kernels::ThreadPool pool(1);
  Fixture f("gemma3-tiny");
  auto cache = f.model.make_cache(8);
  std::vector<float> logits(f.model.shape().vocab_size);
  const int32_t bad[] = {2, 1024};
  try {
    f.model.forward(bad, 0, cache, pool, logits.data(), false);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 1024"), std::string::npos) << e.what();
  }
}

TEST(Gemma3Errors, PositionsPastTheContextAreRejected) {
  kernels::ThreadPool pool(1);
  Fixture f("gemma3-tiny");
  auto cache = f.model.make_cache(4);
  std::vector<float> logits(f.model.shape().vocab_size);
  EXPECT_THROW(f.model.forward(std::span(f.ids).first(5), 0, cache, pool, logits.data(), false), std::runtime_error);
  f.model.forward(std::span(f.ids).first(4), 0, cache, pool, logits.data(), false);
  EXPECT_THROW(f.model.forward(std::span(f.ids).first(1), 4, cache, pool, logits.data(), false), std::runtime_error);
}

}  // namespace
}  // namespace ge
