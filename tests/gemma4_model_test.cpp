// Gemma 4's text decoder (dense and mixture-of-experts) against the float64 reference (tools/ref_gemma4.py, transformers' semantics):
// the resolved per-layer geometry, logits at every position, the residual stream after every layer, chunked
// prefill against stepwise decoding (across the window and the KV-shared layers), batched decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/thread_pool.h"
#include "loader/model_loader.h"
#include "models/gemma4/model.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

// The dense E2B-like fixture and the 26B-A4B-like one (8 experts, top 2, K=V on its full layers, no PLE).
class Gemma4Fixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path fixture() const { return test::data_dir() / GetParam(); }
  nlohmann::json reference() const { return test::read_json(fixture() / "reference.json"); }
  std::vector<int32_t> reference_ids() const { return reference()["token_ids"].get<std::vector<int32_t>>(); }
};

std::vector<float> all_logits(models::CausalLM& model, const std::vector<int32_t>& ids, bool stepwise = false) {
  kernels::ThreadPool pool(2);
  const int64_t vocab = model.shape().vocab_size;
  auto cache = model.make_cache(static_cast<int64_t>(ids.size()));
  std::vector<float> logits(ids.size() * vocab);
  if (!stepwise) {
    model.forward(ids, 0, cache, pool, logits.data(), true);
    return logits;
  }
  for (size_t t = 0; t < ids.size(); ++t) {
    const models::DecodeRow row{ids[t], static_cast<int64_t>(t), &cache};
    model.decode(std::span(&row, 1), pool, logits.data() + t * vocab);
  }
  return logits;
}

TEST_P(Gemma4Fixture, PerLayerGeometryIsTheReferences) {
  const auto c = gemma4::resolve_config(test::read_json(fixture() / "config.json"), "config.json");
  const auto ref = reference();
  ASSERT_EQ(c.num_layers, static_cast<int64_t>(ref["layer_types"].size()));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& lc = c.layers[l];
    EXPECT_EQ(lc.sliding, ref["layer_types"][l] == "sliding_attention") << l;
    EXPECT_EQ(lc.head_dim, ref["layer_head_dim"][l].get<int64_t>()) << l;
    EXPECT_EQ(lc.num_kv_heads, ref["layer_num_key_value_heads"][l].get<int64_t>()) << l;
    EXPECT_EQ(lc.k_eq_v, ref["layer_v_is_raw_k"][l].get<bool>()) << l;
    EXPECT_EQ(lc.intermediate_size, ref["layer_intermediate_size"][l].get<int64_t>()) << l;
    const auto& source = ref["kv_shared_layer_source"][l];
    EXPECT_EQ(c.kv_source(l), source.is_null() ? l : source.get<int64_t>()) << l;
    const auto want = ref["rope_inv_freq"][lc.sliding ? "sliding_attention" : "full_attention"].get<std::vector<double>>();
    ASSERT_EQ(lc.rope_inv_freq.size(), want.size()) << l;
    for (size_t j = 0; j < want.size(); ++j) EXPECT_NEAR(lc.rope_inv_freq[j], want[j], 1e-15) << l << " " << j;
  }
}

TEST(Gemma4Config, DefaultsAreTransformers) {
  const auto c = gemma4::resolve_config(
      nlohmann::json{{"model_type", "gemma4"}, {"text_config", nlohmann::json::object()}}, "config.json");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 2304);
  EXPECT_EQ(c.hidden_size_per_layer_input, 256);
  EXPECT_FALSE(c.final_logit_softcapping);
  for (int64_t l = 0; l < 30; ++l) {
    EXPECT_EQ(c.layers[l].sliding, (l + 1) % 6 != 0) << l;
    EXPECT_EQ(c.layers[l].head_dim, c.layers[l].sliding ? 256 : 512) << l;
  }
  // Full layers: proportional RoPE, a quarter of the pairs rotated, exponents over the whole 512.
  const auto& full = c.layers[5].rope_inv_freq;
  ASSERT_EQ(full.size(), 256u);
  EXPECT_EQ(full[0], 1.0);
  EXPECT_NEAR(full[63], std::pow(1e6, -126.0 / 512), 1e-18);
  EXPECT_EQ(full[64], 0.0);
  EXPECT_EQ(c.placeholder_ids, (std::vector<int32_t>{258880, 258884, 258881}));
  // The last layer is global whatever layer_types says.
  nlohmann::json tc = {{"num_hidden_layers", 2}, {"layer_types", {"sliding_attention", "sliding_attention"}}};
  EXPECT_FALSE(gemma4::resolve_config({{"model_type", "gemma4_text"}, {"num_hidden_layers", 2},
                                       {"layer_types", tc["layer_types"]}},
                                      "config.json")
                   .layers[1]
                   .sliding);
}

TEST_P(Gemma4Fixture, LogitsMatchTheFloat64ReferenceAtEveryPosition) {
  auto m = loader::load_model(fixture(), 256);
  EXPECT_STREQ(m.model->family_name(), "gemma4");
  const float d = test::max_abs_diff(all_logits(*m.model, reference_ids()),
                                     test::read_f32(fixture() / "reference_logits.f32"));
  std::printf("%s: max |logit - float64 reference| = %.3g\n", GetParam().c_str(), d);
  EXPECT_LT(d, 1e-3f);
}

TEST_P(Gemma4Fixture, ResidualStreamMatchesTheReferenceAfterEveryLayer) {
  auto m = loader::load_model(fixture(), 256);
  const auto ids = reference_ids();
  const auto n = static_cast<int64_t>(ids.size()), h = m.model->shape().hidden_size;
  const auto hidden = test::read_f32(fixture() / "reference_hidden.f32");
  const int64_t layers = m.model->shape().num_layers;
  ASSERT_EQ(static_cast<int64_t>(hidden.size()), (layers + 1) * n * h);
  int64_t seen = 0;
  const models::HiddenObserver observer = [&](int64_t index, const float* x, int64_t, int64_t rows) {
    ASSERT_EQ(rows, n);
    float d = 0, scale = 1;
    for (int64_t i = 0; i < n * h; ++i) {
      d = std::max(d, std::abs(x[i] - hidden[index * n * h + i]));
      scale = std::max(scale, std::abs(hidden[index * n * h + i]));
    }
    EXPECT_LT(d, 1e-4f * scale) << "after index " << index;
    ++seen;
  };
  kernels::ThreadPool pool(2);
  auto cache = m.model->make_cache(n);
  std::vector<float> logits(m.model->shape().vocab_size);
  m.model->forward(ids, 0, cache, pool, logits.data(), false, &observer);
  EXPECT_EQ(seen, layers + 1);
}

// Window 8 (gemma4-tiny: the last 5 layers reading layers 3 and 4): 24 tokens in chunks of 5 against one at
// a time; on the MoE fixture the rows routed to one expert go through it together in a chunk.
TEST_P(Gemma4Fixture, ChunkedPrefillEqualsStepwiseDecoding) {
  auto m = loader::load_model(fixture(), 5);
  const auto ids = reference_ids();
  const auto chunked = all_logits(*m.model, ids), stepwise = all_logits(*m.model, ids, true);
  EXPECT_LT(test::max_abs_diff(chunked, stepwise), 2e-5f);
  EXPECT_LT(test::max_abs_diff(chunked, test::read_f32(fixture() / "reference_logits.f32")), 1e-3f);
}

TEST_P(Gemma4Fixture, BatchedDecodeEqualsLoneStepsBitForBit) {
  auto m = loader::load_model(fixture(), 256);
  kernels::ThreadPool pool(2);
  const int64_t vocab = m.model->shape().vocab_size;
  const auto ids = reference_ids();
  std::vector<nn::KVCache> caches;
  std::vector<float> scratch(vocab);
  for (int i = 0; i < 3; ++i) {
    caches.push_back(m.model->make_cache(32));
    m.model->forward(std::span(ids).first(5 + 4 * i), 0, caches[i], pool, scratch.data(), false);
  }
  std::vector<nn::KVCache> lone = caches;
  std::vector<models::DecodeRow> rows;
  for (int i = 0; i < 3; ++i) rows.push_back({ids[10 + i], 5 + 4 * i, &caches[i]});
  std::vector<float> batched(3 * vocab);
  m.model->decode(rows, pool, batched.data());
  for (int i = 0; i < 3; ++i) {
    m.model->forward(std::span(&ids[10 + i], 1), 5 + 4 * i, lone[i], pool, scratch.data(), false);
    EXPECT_TRUE(std::equal(scratch.begin(), scratch.end(), batched.begin() + i * vocab)) << "row " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Gemma4Fixture, ::testing::Values("gemma4-tiny", "gemma4-moe-tiny"),
                         [](const auto& info) { return info.param == "gemma4-tiny" ? "Dense" : "MoE"; });

}  // namespace
}  // namespace ge
