// Whole models with MLX-quantized weights: the logits of a fixture whose Linear and Embedding weights are
// quantized (every mode and bit width, per-layer overrides, a quantized tied head) against the honest
// reference, the same float model given the dequantized weights; and the checks made when binding them.
#include <gtest/gtest.h>

#include <deque>
#include <map>

#include "convert/gguf_convert.h"
#include "formats/safetensors.h"
#include "kernels/mlx_quant.h"
#include "kernels/ops.h"
#include "loader/model_loader.h"
#include "models/gemma/model.h"
#include "models/gemma3n/model.h"
#include "models/quantization_config.h"
#include "quantize/mlx_quantize.h"
#include "mlx_copy.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using kernels::QuantMode;
using kernels::QuantParams;

std::vector<int32_t> reference_ids(const std::string& fixture) {
  return test::read_json(test::fixture_reference_dir(fixture) / "reference.json")["token_ids"]
      .get<std::vector<int32_t>>();
}

// Logits of every position, from one prompt chunk or one token at a time (the decode kernels, which sum
// each group's q * x before scaling it).
std::vector<float> all_logits(models::CausalLM& model, const std::vector<int32_t>& ids, bool stepwise = false) {
  const int64_t vocab = model.shape().vocab_size;
  kernels::ThreadPool pool(2);
  std::vector<float> out(ids.size() * vocab);
  auto cache = model.make_cache(static_cast<int64_t>(ids.size()));
  if (!stepwise) {
    model.forward(ids, 0, cache, pool, out.data(), true);
    return out;
  }
  for (size_t i = 0; i < ids.size(); ++i)
    model.forward(std::span(ids).subspan(i, 1), static_cast<int64_t>(i), cache, pool,
                  out.data() + i * vocab, true);
  return out;
}

std::vector<float> all_logits(const gemma::Config& config, const nn::LayerSource& layers,
                              const std::vector<int32_t>& ids, bool stepwise = false,
                              kernels::Precision precision = kernels::Precision::kExact) {
  gemma::Model model(config, layers, 64);
  model.set_prefill_precision(precision);
  model.set_decode_precision(precision);
  return all_logits(model, ids, stepwise);
}

// Quantized model and dequantized reference for one fixture and one quantization.
struct Comparison {
  float diff;        // max |quantized - dequantized reference| over all logits, prompt and decode paths
  float from_float;  // max |quantized - the unquantized model|: what quantizing cost
  float fast;        // the same as diff with activations in 8-bit blocks (Precision::kReducedActivations)
};

Comparison compare(const std::string& fixture, const nn::QuantizationConfig& q) {
  const auto dir = test::fixture_model_dir(fixture);
  const formats::SafetensorsCheckpoint ckpt(dir);
  const gemma::Config config = loader::load_config(dir);
  const auto params_of = [&](const std::string& path) -> std::optional<QuantParams> {
    if (const auto it = q.per_layer.find(path); it != q.per_layer.end()) return it->second;
    return q.defaults;
  };
  const test::QuantizedCopy quantized(ckpt, params_of, false), reference(ckpt, params_of, true);
  const auto ids = reference_ids(fixture);
  const auto got = all_logits(config, nn::LayerSource(quantized, q), ids);
  const auto got_stepwise = all_logits(config, nn::LayerSource(quantized, q), ids, true);
  const auto expected = all_logits(config, nn::LayerSource(reference), ids);
  const auto unquantized = all_logits(config, nn::LayerSource(ckpt), ids);
  const auto fast = all_logits(config, nn::LayerSource(quantized, q), ids, false, kernels::Precision::kReducedActivations);
  const auto fast_stepwise =
      all_logits(config, nn::LayerSource(quantized, q), ids, true, kernels::Precision::kReducedActivations);
  return {std::max(test::max_abs_diff(got.data(), expected.data(), got.size()),
                   test::max_abs_diff(got_stepwise.data(), expected.data(), got.size())),
          test::max_abs_diff(got.data(), unquantized.data(), got.size()),
          std::max(test::max_abs_diff(fast.data(), expected.data(), got.size()),
                   test::max_abs_diff(fast_stepwise.data(), expected.data(), got.size()))};
}

struct Case {
  std::string fixture;
  QuantParams params;
};

class MlxQuantizedModel : public ::testing::TestWithParam<Case> {};

TEST_P(MlxQuantizedModel, LogitsMatchTheFloatModelWithDequantizedWeights) {
  const Case& c = GetParam();
  nn::QuantizationConfig q;
  q.defaults = c.params;
  const Comparison r = compare(c.fixture, q);
  std::printf("%s %s: max |logit - dequantized reference| = %.3g exact, %.3g fast (%.3g from the float model)\n",
              c.fixture.c_str(), kernels::describe(c.params).c_str(), r.diff, r.fast, r.from_float);
  EXPECT_LT(r.diff, 1e-3f);
  // Activations rounded to 8-bit blocks move these random-weight logits by 0.13-0.19 with 8-bit weights
  // (llama.cpp's distance on gemma3-tiny's q8_0 GGUF, from the same rounding: 0.18) and 0.18-0.72 with 4-bit
  // ones; a kernel that mixes up codes, scales or rows lands at 10 or more.
  EXPECT_LT(r.fast, 0.25f);  // 8-bit and 4-bit alike since the offsets multiply the rounded activations
  EXPECT_GT(r.from_float, 1e-3f) << "the weights were not quantized";
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int bits : {2, 3, 4, 5, 6, 8}) out.push_back({"gemma3-tiny", {QuantMode::kAffine, bits, 64}});
  out.push_back({"gemma3-tiny", {QuantMode::kAffine, 4, 32}});
  for (QuantMode m : {QuantMode::kNvfp4, QuantMode::kMxfp4, QuantMode::kMxfp8})
    out.push_back({"gemma3-tiny", kernels::default_quant_params(m)});
  out.push_back({"gemma2-tiny", {QuantMode::kAffine, 4, 64}});
  out.push_back({"gemma-tiny", {QuantMode::kAffine, 8, 32}});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Modes, MlxQuantizedModel, ::testing::ValuesIn(cases()));

// mlx-lm's per-layer entries: one layer at other parameters, the embedding (and so the tied head) float.
// Gemma 3n binds the same layer set: an MLX-quantized 3n (every matrix whose rows are whole groups, the
// per-layer table and the routers included) is the model of its dequantized weights.
TEST(MlxQuantizedModel, Gemma3nIsTheModelOfItsDequantizedWeights) {
  const auto dir = test::fixture_model_dir("gemma3n-tiny");
  const formats::SafetensorsCheckpoint ckpt(dir);
  const auto config_json = test::read_json(dir / "config.json");
  const gemma3n::Config config = gemma3n::resolve_config(config_json, "config.json");
  const auto ids = reference_ids("gemma3n-tiny");
  for (const QuantParams& p : {QuantParams{QuantMode::kAffine, 4, 32}, QuantParams{QuantMode::kAffine, 8, 32}}) {
    nn::QuantizationConfig q;
    q.defaults = p;
    const auto params_of = [&](const std::string& path) -> std::optional<QuantParams> {
      if (path.find("audio_tower") != std::string::npos || path.find("vision_tower") != std::string::npos)
        return std::nullopt;
      return p;
    };
    const test::QuantizedCopy quantized(ckpt, params_of, false), reference(ckpt, params_of, true);
    gemma3n::Model got(config, nn::LayerSource(quantized, q), 64), want(config, nn::LayerSource(reference), 64);
    ASSERT_NE(nn::weight_format(got.weights().per_layer.embed_tokens_per_layer.as_linear().weight()), "BF16");
    const auto expected = all_logits(want, ids);
    const auto exact = all_logits(got, ids), stepwise = all_logits(got, ids, true);
    got.set_prefill_precision(kernels::Precision::kReducedActivations);
    got.set_decode_precision(kernels::Precision::kReducedActivations);
    const auto fast = all_logits(got, ids);
    const float d = std::max(test::max_abs_diff(exact.data(), expected.data(), exact.size()),
                             test::max_abs_diff(stepwise.data(), expected.data(), exact.size()));
    const float f = test::max_abs_diff(fast.data(), expected.data(), exact.size());
    // The tiny 3n's random weights amplify any rounding (AltUp mixes four streams per layer): measure the
    // activations' 8-bit blocks against what quantizing the weights themselves cost.
    gemma3n::Model unquantized(config, nn::LayerSource(ckpt), 64);
    const auto from_float = all_logits(unquantized, ids);
    const float w = test::max_abs_diff(exact.data(), from_float.data(), exact.size());
    std::printf("gemma3n-tiny %s: exact %.2g, default path %.3f from the dequantized model (the weights' "
                "rounding: %.3f)\n", kernels::describe(p).c_str(), d, f, w);
    EXPECT_LT(d, 5e-5f) << kernels::describe(p);
    EXPECT_GT(f, 1e-3f) << "the default path should round activations";
    EXPECT_LT(f, w) << kernels::describe(p);
  }
}

TEST(MlxQuantizedModelOverrides, PerLayerEntriesAndAFloatEmbedding) {
  nn::QuantizationConfig q;
  q.defaults = QuantParams{QuantMode::kAffine, 4, 64};
  q.per_layer["model.layers.1.mlp.down_proj"] = QuantParams{QuantMode::kAffine, 8, 32};
  q.per_layer["model.layers.2.self_attn.q_proj"] = kernels::default_quant_params(QuantMode::kMxfp8);
  q.per_layer["model.embed_tokens"] = std::nullopt;
  const Comparison r = compare("gemma3-tiny", q);
  EXPECT_LT(r.diff, 1e-3f);
}

// What LayerSource hands the model for a quantized checkpoint, and what it refuses.
class MlxBinding : public ::testing::Test {
 protected:
  MlxBinding()
      : ckpt(test::demo_model_dir()),
        quantized(ckpt, [](const std::string&) { return std::optional(QuantParams{QuantMode::kAffine, 4, 64}); },
                  false) {}

  std::string bind_error(const TensorSource& src, const nn::QuantizationConfig& q) {
    try {
      gemma::bind_weights(loader::load_config(test::demo_model_dir()), nn::LayerSource(src, q));
      return "";
    } catch (const std::runtime_error& e) {
      return e.what();
    }
  }

  formats::SafetensorsCheckpoint ckpt;
  test::QuantizedCopy quantized;
};

TEST_F(MlxBinding, LayersAreQuantizedAndTheTiedHeadIsTheQuantizedEmbedding) {
  nn::QuantizationConfig q;
  q.defaults = QuantParams{QuantMode::kAffine, 4, 64};
  const gemma::Weights w = gemma::bind_weights(loader::load_config(test::demo_model_dir()), nn::LayerSource(quantized, q));
  EXPECT_EQ(nn::weight_format(w.layers[0].mlp.down_proj.weight()), "affine 4-bit g64");
  EXPECT_EQ(nn::weight_format(w.embed_tokens.as_linear().weight()), "affine 4-bit g64");
  const auto& head = std::get<kernels::QuantizedMatrix>(w.lm_head.weight());
  EXPECT_EQ(head.codes, std::get<kernels::QuantizedMatrix>(w.embed_tokens.as_linear().weight()).codes);
}

TEST_F(MlxBinding, ScalesWithoutAQuantizationConfigAreAnError) {
  EXPECT_NE(bind_error(quantized, {}).find("no \"quantization\""), std::string::npos) << bind_error(quantized, {});
}

TEST_F(MlxBinding, ParametersThatDoNotMatchTheShapesNameTheTensor) {
  nn::QuantizationConfig q;
  q.defaults = QuantParams{QuantMode::kAffine, 8, 64};  // the codes were packed at 4 bits
  const std::string error = bind_error(quantized, q);
  EXPECT_NE(error.find("model.embed_tokens.weight' has shape [1024, 8]"), std::string::npos) << error;
  EXPECT_NE(error.find("affine 8-bit g64"), std::string::npos) << error;
  q.defaults = QuantParams{QuantMode::kAffine, 4, 32};  // twice the groups the scales have
  EXPECT_NE(bind_error(quantized, q).find(".scales' has shape"), std::string::npos) << bind_error(quantized, q);
}

TEST_F(MlxBinding, MissingBiasesAreNamed) {
  struct WithoutBiases final : TensorSource {
    explicit WithoutBiases(const TensorSource& s) : s(s) {}
    const Tensor* find(std::string_view name) const override {
      return name == "model.layers.0.mlp.up_proj.biases" ? nullptr : s.find(name);
    }
    std::vector<const Tensor*> all() const override { return s.all(); }
    std::string describe() const override { return "edited"; }
    const TensorSource& s;
  } edited(quantized);
  nn::QuantizationConfig q;
  q.defaults = QuantParams{QuantMode::kAffine, 4, 64};
  EXPECT_NE(bind_error(edited, q).find("missing tensor 'model.layers.0.mlp.up_proj.biases'"), std::string::npos);
}

// The folder `gemma quantize` writes, through the loader (config.json's dicts, U32 codes, U8 or bf16
// scales from safetensors) and through `gemma convert`, which dequantizes it.
class MlxFolder : public ::testing::TestWithParam<QuantParams> {
 protected:
  void SetUp() override {
    quantize::QuantizeOptions options;
    options.params = GetParam();
    quantize::quantize_checkpoint(test::demo_model_dir(), folder(), options);
  }
  fs::path folder() const { return scratch.path() / "q"; }

  // The same quantization built in memory from the fixture (test::QuantizedCopy), as a model.
  std::vector<float> in_memory_logits(bool dequantized) const {
    const formats::SafetensorsCheckpoint ckpt(test::demo_model_dir());
    const test::QuantizedCopy copy(ckpt, [&](const std::string&) { return std::optional(GetParam()); }, dequantized);
    nn::QuantizationConfig q;
    if (!dequantized) q.defaults = GetParam();
    return all_logits(loader::load_config(test::demo_model_dir()), nn::LayerSource(copy, q), ids);
  }

  test::ScratchDir scratch;
  const std::vector<int32_t> ids = reference_ids("gemma3-tiny");
};

TEST_P(MlxFolder, LoadsAsTheQuantizedModel) {
  loader::LoadedModel m = loader::load_model(folder(), 64);
  const auto got = all_logits(*m.model, ids);
  const auto expected = in_memory_logits(false);
  EXPECT_EQ(test::max_abs_diff(got.data(), expected.data(), got.size()), 0.0f);
}

TEST_P(MlxFolder, ConvertsToGgufWithTheDequantizedWeights) {
  const fs::path file = scratch.path() / "q.gguf";
  convert::ConvertOptions options;
  options.out_type = convert::OutType::F32;
  convert::convert_to_gguf(folder(), file, options);
  loader::LoadedModel m = loader::load_model(file, 64);
  const auto got = all_logits(*m.model, ids);
  const auto expected = in_memory_logits(true);
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  std::printf("%s folder -> f32 GGUF: max |logit - dequantized model| = %.3g\n", kernels::describe(GetParam()).c_str(),
              diff);
  EXPECT_LT(diff, 1e-4f);
}

TEST_P(MlxFolder, ConvertsToQ8_0AndItsDefaultTypeIsTheWeightsType) {
  const fs::path file = scratch.path() / "q.gguf";
  const auto r = convert::convert_to_gguf(folder(), file, {});
  EXPECT_EQ(r.out_type, convert::OutType::BF16);
  convert::ConvertOptions q8;
  q8.out_type = convert::OutType::Q8_0;
  convert::convert_to_gguf(folder(), scratch.path() / "q8.gguf", q8);
  EXPECT_NO_THROW(loader::load_model(scratch.path() / "q8.gguf", 64));
}

INSTANTIATE_TEST_SUITE_P(Modes, MlxFolder,
                         ::testing::Values(QuantParams{QuantMode::kAffine, 4, 64}, QuantParams{QuantMode::kAffine, 6, 32},
                                           kernels::default_quant_params(QuantMode::kNvfp4),
                                           kernels::default_quant_params(QuantMode::kMxfp8)),
                         [](const auto& info) {
                           std::string name = kernels::describe(info.param);
                           for (char& ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

// A Gemma 3 multimodal checkpoint (gemma3, language_model.model.* names): its text model is quantized and
// loads as the quantized text model; the vision tower and projector stay in float.
TEST(MlxFolderMultimodal, TheLanguageModelPrefixLoadsQuantized) {
  test::ScratchDir scratch;
  const fs::path in = test::fixture_model_dir("gemma3-tiny-vision"), out = scratch.path() / "q";
  quantize::QuantizeOptions options;
  options.params = QuantParams{QuantMode::kAffine, 4, 64};
  quantize::quantize_checkpoint(in, out, options);
  const formats::SafetensorsCheckpoint ckpt(in);
  const test::QuantizedCopy copy(ckpt, [&](const std::string& path) {
    return path.starts_with("language_model.") ? std::optional(options.params) : std::nullopt;
  }, false);
  nn::QuantizationConfig q;
  q.defaults = options.params;
  const auto ids = reference_ids("gemma3-tiny-vision");
  const auto expected = all_logits(loader::load_config(in), nn::LayerSource(copy, q), ids);
  loader::LoadedModel m = loader::load_model(out, 64);
  const auto got = all_logits(*m.model, ids);
  EXPECT_EQ(test::max_abs_diff(got.data(), expected.data(), got.size()), 0.0f);
  EXPECT_EQ(nn::weight_format(dynamic_cast<gemma::Model&>(*m.model).weights().layers[0].q_proj.weight()), "affine 4-bit g64");
  EXPECT_EQ(formats::SafetensorsCheckpoint(out).find("multi_modal_projector.mm_input_projection_weight")->dtype,
            DType::BF16);
}

nlohmann::json config_with(const nlohmann::json& quantization) {
  return {{"model_type", "gemma3_text"}, {"quantization", quantization}};
}

std::string read_error(const nlohmann::json& config) {
  try {
    models::read_quantization_config(config, "config.json");
    return "";
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

TEST(MlxQuantizationConfig, ReadsMlxLmDictsOldAndNew) {
  // mlx-community/gemma-3-1b-pt-6bit: no mode (mlx-lm before 0.27), both dicts.
  const nlohmann::json old = {{"quantization", {{"group_size", 64}, {"bits", 6}}},
                              {"quantization_config", {{"group_size", 64}, {"bits", 6}}}};
  const auto q = models::read_quantization_config(old, "config.json");
  EXPECT_EQ(q.defaults, (QuantParams{QuantMode::kAffine, 6, 64}));
  EXPECT_TRUE(q.per_layer.empty());

  const auto mixed = models::read_quantization_config(
      config_with({{"group_size", 64},
                   {"bits", 4},
                   {"mode", "affine"},
                   {"model.layers.3.mlp.down_proj", {{"group_size", 32}, {"bits", 8}}},
                   {"model.layers.0.self_attn.q_proj", {{"mode", "mxfp8"}}},
                   {"model.norm", false}}),
      "config.json");
  EXPECT_EQ(mixed.per_layer.at("model.layers.3.mlp.down_proj"), (QuantParams{QuantMode::kAffine, 8, 32}));
  EXPECT_EQ(mixed.per_layer.at("model.layers.0.self_attn.q_proj"), (QuantParams{QuantMode::kMxfp8, 8, 32}));
  EXPECT_EQ(mixed.per_layer.at("model.norm"), std::nullopt);

  // Only quantization_config, in MLX's shape.
  const auto only = models::read_quantization_config({{"quantization_config", {{"group_size", 16}, {"bits", 4}, {"mode", "nvfp4"}}}}, "c");
  EXPECT_EQ(only.defaults, kernels::default_quant_params(QuantMode::kNvfp4));
  EXPECT_FALSE(models::read_quantization_config({{"model_type", "gemma3_text"}}, "c").defaults);
}

TEST(MlxQuantizationConfig, BadValuesNameTheKey) {
  EXPECT_NE(read_error(config_with({{"group_size", 64}, {"bits", 4}, {"mode", "int3"}})).find("unknown quantization mode"),
            std::string::npos);
  EXPECT_NE(read_error(config_with({{"group_size", 64}, {"bits", 7}})).find("bits 7"), std::string::npos);
  EXPECT_NE(read_error(config_with({{"group_size", 48}, {"bits", 4}})).find("group size 48"), std::string::npos);
  EXPECT_NE(read_error(config_with({{"group_size", 32}, {"bits", 4}, {"mode", "nvfp4"}})).find("requires group size 16"),
            std::string::npos);
  EXPECT_NE(read_error(config_with({{"group_size", 64}, {"bits", 4}, {"model.layers.0.mlp.up_proj", {{"bits", 1}}}}))
                .find("model.layers.0.mlp.up_proj"),
            std::string::npos);
  EXPECT_NE(read_error({{"quantization_config", {{"quant_method", "gptq"}, {"bits", 4}}}}).find("gptq"),
            std::string::npos);
}

}  // namespace
}  // namespace ge
