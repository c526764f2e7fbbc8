// config.json resolution (layer pattern, RoPE per layer, defaults of a sparse text_config) and the
// checks that bind a checkpoint's tensors to the model.
#include <gtest/gtest.h>

#include "formats/safetensors.h"
#include "loader/model_loader.h"
#include "models/gemma/config.h"
#include "models/gemma/model.h"
#include "test_util.h"

namespace ge {
namespace {

nlohmann::json demo_config() { return test::read_json(test::demo_model_dir() / "config.json"); }

std::string resolve_error(const nlohmann::json& j) {
  try {
    gemma::resolve_config(j, "config.json");
    return "";
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

TEST(Gemma3Config, PatternGivesEverySixthLayerGlobal) {
  auto j = demo_config();
  j["num_hidden_layers"] = 12;
  const auto c = gemma::resolve_config(j, "config.json");
  for (int i = 0; i < 12; ++i) EXPECT_EQ(c.layers[i].sliding, i != 5 && i != 11) << i;
  EXPECT_FLOAT_EQ(c.attention_scale(), 1.0f / std::sqrt(32.0f));
  EXPECT_FLOAT_EQ(c.embed_scale(), 8.0f);
}

TEST(Gemma3Config, LayerTypesWinOverThePattern) {
  auto j = demo_config();
  j["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                      "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"};
  const auto c = gemma::resolve_config(j, "config.json");
  EXPECT_FALSE(c.layers[0].sliding);
  EXPECT_TRUE(c.layers[5].sliding);
  EXPECT_FALSE(c.layers[7].sliding);
}

TEST(Gemma3Config, LinearRopeScalingAppliesToGlobalLayersOnly) {
  auto j = demo_config();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  const auto c = gemma::resolve_config(j, "config.json");
  EXPECT_DOUBLE_EQ(c.layers[5].rope_scale, 8.0);
  EXPECT_DOUBLE_EQ(c.layers[5].rope_base, 1e6);
  EXPECT_DOUBLE_EQ(c.layers[0].rope_scale, 1.0);
  EXPECT_DOUBLE_EQ(c.layers[0].rope_base, 1e4);
}

TEST(Gemma3Config, SparseMultimodalConfigTakesTransformersDefaults) {
  const auto c = loader::load_config(test::data_dir() / "gemma3-tiny-vision");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.vocab_size, 1088);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.sliding_window, 16);
  EXPECT_FALSE(c.final_logit_softcapping.has_value());
  EXPECT_DOUBLE_EQ(c.layers[5].rope_scale, 8.0);
}

TEST(GemmaConfig, Gemma1IsAllGlobalWithHeadDimScaling) {
  const auto c = loader::load_config(test::data_dir() / "gemma-tiny");
  EXPECT_EQ(c.family, gemma::Family::kGemma);
  for (const auto& l : c.layers) EXPECT_FALSE(l.sliding);
  EXPECT_FLOAT_EQ(c.attention_scale(), 1.0f / std::sqrt(32.0f));
  EXPECT_FALSE(c.qk_norm());
  EXPECT_FALSE(c.sandwich_norms());
  EXPECT_FALSE(c.final_logit_softcapping.has_value());
  EXPECT_EQ(c.num_kv_heads, 1);
}

TEST(GemmaConfig, Gemma2SlidesOnEvenLayersAndSoftCaps) {
  const auto c = loader::load_config(test::data_dir() / "gemma2-tiny");
  EXPECT_EQ(c.family, gemma::Family::kGemma2);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.layers[i].sliding, i % 2 == 0) << i;
  EXPECT_DOUBLE_EQ(c.layers[0].rope_base, 1e4);
  EXPECT_DOUBLE_EQ(c.layers[1].rope_base, 1e4);
  EXPECT_FLOAT_EQ(c.attention_scale(), 0.25f);  // query_pre_attn_scalar 16, not head_dim 32
  EXPECT_EQ(c.attn_logit_softcapping, 50.0);
  EXPECT_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_TRUE(c.sandwich_norms());
  EXPECT_FALSE(c.qk_norm());
}

TEST(GemmaConfig, Gemma3IgnoresAttentionSoftCapping) {
  auto j = demo_config();
  j["attn_logit_softcapping"] = 50.0;
  EXPECT_FALSE(gemma::resolve_config(j, "config.json").attn_logit_softcapping.has_value());
}

TEST(Gemma3Config, UnsupportedRopeScalingIsNamed) {
  auto j = demo_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  const auto msg = resolve_error(j);
  EXPECT_NE(msg.find("config.json: rope_scaling"), std::string::npos) << msg;
  EXPECT_NE(msg.find("yarn"), std::string::npos) << msg;
}

TEST(Gemma3Config, UnknownModelTypeIsNamed) {
  auto j = demo_config();
  j["model_type"] = "llama";
  EXPECT_NE(resolve_error(j).find("not supported"), std::string::npos) << resolve_error(j);
  EXPECT_NE(resolve_error(j).find("model_type: 'llama'"), std::string::npos) << resolve_error(j);
}

TEST(Gemma3Config, BadFieldIsNamed) {
  auto j = demo_config();
  j["num_hidden_layers"] = "eight";
  EXPECT_NE(resolve_error(j).find("num_hidden_layers"), std::string::npos) << resolve_error(j);
  j = demo_config();
  j["layer_types"] = {"full_attention"};
  EXPECT_NE(resolve_error(j).find("layer_types"), std::string::npos) << resolve_error(j);
}

TEST(Gemma3Config, GenerationConfigEosListAndSamplingDefaults) {
  const auto d = loader::load_generation_defaults(test::demo_model_dir());
  EXPECT_EQ(d.eos_ids, (std::vector<int32_t>{1, 9}));
  EXPECT_EQ(d.sampling.top_k, 64);
  EXPECT_FLOAT_EQ(d.sampling.top_p, 0.95f);
  EXPECT_FLOAT_EQ(d.sampling.temperature, 1.0f);
}

// A TensorSource that hides or alters one tensor of a good checkpoint.
class EditedSource final : public TensorSource {
 public:
  EditedSource(const TensorSource& base, std::string name, std::optional<Tensor> replacement)
      : base_(base), name_(std::move(name)), replacement_(std::move(replacement)) {}
  const Tensor* find(std::string_view name) const override {
    if (name == name_) return replacement_ ? &*replacement_ : nullptr;
    return base_.find(name);
  }
  std::vector<const Tensor*> all() const override { return base_.all(); }
  std::string describe() const override { return "edited"; }

 private:
  const TensorSource& base_;
  std::string name_;
  std::optional<Tensor> replacement_;
};

std::string bind_error(const TensorSource& src) {
  try {
    gemma::bind_weights(loader::load_config(test::demo_model_dir()), nn::LayerSource(src));
    return "";
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

TEST(Gemma3Weights, MissingWrongShapeAndWrongDtypeTensorsAreNamed) {
  formats::SafetensorsCheckpoint ckpt(test::demo_model_dir());
  const std::string name = "model.layers.3.self_attn.k_proj.weight";
  EXPECT_EQ(bind_error(ckpt), "");

  EXPECT_NE(bind_error(EditedSource(ckpt, name, std::nullopt)).find("missing tensor '" + name + "'"),
            std::string::npos);

  Tensor reshaped = *ckpt.find(name);
  reshaped.shape = {32, 128};
  const auto shape_msg = bind_error(EditedSource(ckpt, name, reshaped));
  EXPECT_NE(shape_msg.find(name + "' has shape [32, 128], expected [64, 64]"), std::string::npos) << shape_msg;

  Tensor retyped = *ckpt.find(name);
  retyped.dtype = DType::I32;
  const auto dtype_msg = bind_error(EditedSource(ckpt, name, retyped));
  EXPECT_NE(dtype_msg.find("unsupported dtype I32"), std::string::npos) << dtype_msg;
}

}  // namespace
}  // namespace ge
