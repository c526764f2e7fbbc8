// `gemma convert` for Gemma 3n (text model only): the GGUF read back with our reader and checked against
// values computed here from the fixture's own files (config.json, the safetensors tensors), with the
// normal quantile found independently by bisection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include "convert/gguf_convert.h"
#include "convert_test_util.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "models/gemma3n/config.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using formats::GgufFile;
using nlohmann::json;

const std::string kPrefix = "model.language_model.";

fs::path fixture() {
  return test::data_dir() / "gemma3n-tiny";
}

json text_config(const fs::path& dir) {
  return test::read_json(dir / "config.json")["text_config"];
}

// A copy of the fixture whose text_config `edit` changes.
struct EditedCopy : test::CheckpointCopy {
  template <class Edit>
  explicit EditedCopy(Edit&& edit) : CheckpointCopy(fixture()) {
    json c = test::read_json(src / "config.json");
    edit(c["text_config"]);
    std::ofstream(src / "config.json") << c.dump(2);
  }
};

// Phi^-1(p) by bisection on Phi(x) = erfc(-x / sqrt 2) / 2, to 1e-13; by symmetry above the median,
// where Phi(x) near 1 cannot resolve the tail (1 - p is exact there).
double probit_by_bisection(double p) {
  if (p > 0.5) return -probit_by_bisection(1 - p);
  double lo = -40, hi = 40;
  while (hi - lo > 1e-13) {
    const double mid = (lo + hi) / 2;
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

float bf16_at(const Tensor& t, int64_t i) {
  return bf16_to_f32(test::u16_at(t.data + 2 * i));
}

using Shape = std::vector<int64_t>;

// Every tensor the text GGUF holds, with its shape (outermost first), derived from config.json.
std::map<std::string, Shape> expected_shapes(const json& c) {
  const int64_t d = c["hidden_size"], vocab = c["vocab_size"], layers = c["num_hidden_layers"];
  const int64_t p = c["hidden_size_per_layer_input"], n = c["altup_num_inputs"], rank = c["laurel_rank"];
  const int64_t hd = c["head_dim"], q = c["num_attention_heads"].get<int64_t>() * hd,
                kv = c["num_key_value_heads"].get<int64_t>() * hd;
  std::map<std::string, Shape> want = {
      {"token_embd.weight", {vocab, d}},
      {"per_layer_token_embd.weight", {vocab, layers * p}},
      {"per_layer_model_proj.weight", {layers * p, d}},
      {"per_layer_proj_norm.weight", {p}},
      {"altup_proj.weight", {n - 1, d, d}},
      {"altup_unembd_proj.weight", {n - 1, d, d}},
      {"output_norm.weight", {d}},
  };
  for (int64_t l = 0; l < layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const int64_t ff = c["intermediate_size"][l];
    const std::map<std::string, Shape> layer = {
        {"attn_norm", {d}},
        {"attn_q", {q, d}},
        {"attn_k", {kv, d}},
        {"attn_v", {kv, d}},
        {"attn_output", {d, q}},
        {"attn_q_norm", {hd}},
        {"attn_k_norm", {hd}},
        {"post_attention_norm", {d}},
        {"ffn_norm", {d}},
        {"ffn_gate", {ff, d}},
        {"ffn_up", {ff, d}},
        {"ffn_down", {d, ff}},
        {"post_ffw_norm", {d}},
        {"inp_gate", {p, d}},
        {"proj", {d, p}},
        {"post_norm", {d}},
        {"altup_correct_coef", {n, n}},
        {"altup_correct_scale", {d}},
        {"altup_predict_coef", {n * n, n}},
        {"altup_router", {n, d}},
        {"altup_router_norm", {d}},
        {"laurel_l", {rank, d}},
        {"laurel_r", {d, rank}},
        {"laurel_post_norm", {d}},
    };
    for (const auto& [name, shape] : layer) want[b + name + ".weight"] = shape;
  }
  return want;
}

// (GGUF name, checkpoint name) of every 1-D tensor: norms and the correction output scale.
std::vector<std::pair<std::string, std::string>> vector_names(const json& c) {
  std::vector<std::pair<std::string, std::string>> v = {
      {"output_norm.weight", kPrefix + "norm.weight"},
      {"per_layer_proj_norm.weight", kPrefix + "per_layer_projection_norm.weight"}};
  for (int64_t l = 0; l < c["num_hidden_layers"].get<int64_t>(); ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", s = kPrefix + "layers." + std::to_string(l) + ".";
    for (const auto& [dst, src] : std::vector<std::pair<std::string, std::string>>{
             {"attn_norm.weight", "input_layernorm.weight"},
             {"attn_q_norm.weight", "self_attn.q_norm.weight"},
             {"attn_k_norm.weight", "self_attn.k_norm.weight"},
             {"post_attention_norm.weight", "post_attention_layernorm.weight"},
             {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
             {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
             {"post_norm.weight", "post_per_layer_input_norm.weight"},
             {"altup_correct_scale.weight", "altup.correct_output_scale"},
             {"altup_router_norm.weight", "altup.router_norm.weight"},
             {"laurel_post_norm.weight", "laurel.post_laurel_norm.weight"}})
      v.push_back({b + dst, s + src});
  }
  return v;
}

void expect_tensor_set(const GgufFile& g, const json& c, DType matrix) {
  const auto want = expected_shapes(c);
  EXPECT_EQ(g.all().size(), want.size());
  for (const Tensor* t : g.all()) {
    const auto it = want.find(t->name);
    ASSERT_NE(it, want.end()) << "unexpected tensor " << t->name;
    EXPECT_EQ(t->shape, it->second) << t->name;
    EXPECT_EQ(t->dtype, t->shape.size() == 1 ? DType::F32 : matrix) << t->name;
  }
}

TEST(ConvertGemma3n, NormalQuantileMatchesBisection) {
  for (double p :
       {1e-300, 1e-12, 1e-6, 0.001, 0.02425, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.97575, 0.999, 1 - 1e-9}) {
    const double want = probit_by_bisection(p);
    EXPECT_NEAR(gemma3n::normal_quantile(p), want, 1e-12 * std::max(1.0, std::abs(want))) << p;
  }
  EXPECT_EQ(gemma3n::normal_quantile(0.5), 0.0);
}

TEST(ConvertGemma3n, ConfigDefaultsAreTransformers) {
  // An empty text_config is transformers' E4B shape: every fifth layer global, the first 10 sparse.
  const gemma3n::Config c = gemma3n::resolve_config(
      json{{"model_type", "gemma3n"}, {"text_config", json::object()}}, "config.json");
  EXPECT_EQ(c.num_layers, 35);
  EXPECT_EQ(c.vocab_size, 262400);
  EXPECT_EQ(c.vocab_size_per_layer_input, 262144);
  EXPECT_EQ(c.hidden_size_per_layer_input, 256);
  EXPECT_EQ(c.laurel_rank, 64);
  EXPECT_EQ(c.num_kv_shared_layers, 15);
  EXPECT_EQ(c.altup_num_inputs, 4);
  EXPECT_EQ(c.altup_coef_clip, 120.0);
  EXPECT_EQ(c.sliding_window, 512);
  ASSERT_EQ(c.layers.size(), 35u);
  for (int64_t i = 0; i < 35; ++i) {
    EXPECT_EQ(c.layers[i].sliding, (i + 1) % 5 != 0) << i;
    EXPECT_EQ(c.layers[i].intermediate_size, 16384) << i;
    EXPECT_EQ(c.layers[i].activation_sparsity, i < 10 ? 0.95 : 0.0) << i;
  }
  // torch takes the quantile of the float32 sparsity, as the reference does.
  EXPECT_NEAR(c.layers[0].sparsity_std_multiplier, probit_by_bisection(static_cast<float>(0.95)), 1e-12);
  EXPECT_EQ(c.layers[10].sparsity_std_multiplier, 0.0);
}

TEST(ConvertGemma3n, TinyBf16MetadataFollowsConfig) {
  const fs::path src = fixture();
  test::ScratchDir dir;
  const fs::path out = test::convert_fixture(src, dir.path(), std::nullopt);  // default: checkpoint's bf16
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
  const GgufFile g(out);
  const auto& m = g.metadata();
  const json c = text_config(src);
  const int64_t layers = c["num_hidden_layers"];

  EXPECT_EQ(m.get_string("general.architecture"), "gemma3n");
  EXPECT_EQ(m.get_string("general.name"), "gemma3n-tiny");
  EXPECT_EQ(m.get_u32("general.file_type"), 32u);  // MOSTLY_BF16
  EXPECT_EQ(m.get_u32("general.quantization_version"), 2u);
  EXPECT_EQ(m.get_u32("gemma3n.block_count"), c["num_hidden_layers"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.context_length"), c["max_position_embeddings"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.embedding_length"), c["hidden_size"].get<uint32_t>());
  EXPECT_EQ(m.get_array<int32_t>("gemma3n.feed_forward_length"),
            c["intermediate_size"].get<std::vector<int32_t>>());
  EXPECT_EQ(m.get_u32("gemma3n.attention.head_count"), c["num_attention_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.attention.head_count_kv"), c["num_key_value_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.attention.key_length"), c["head_dim"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.attention.value_length"), c["head_dim"].get<uint32_t>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3n.rope.freq_base"), c["rope_theta"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3n.rope.freq_base_swa"), c["rope_local_base_freq"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3n.attention.layer_norm_rms_epsilon"), c["rms_norm_eps"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3n.final_logit_softcapping"), c["final_logit_softcapping"].get<float>());
  EXPECT_EQ(m.get_u32("gemma3n.attention.sliding_window"), c["sliding_window"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.altup.active_idx"), c["altup_active_idx"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.altup.num_inputs"), c["altup_num_inputs"].get<uint32_t>());
  EXPECT_EQ(m.get_bool("gemma3n.altup.correct_scale"), c["altup_correct_scale"].get<bool>());
  EXPECT_EQ(m.get_u32("gemma3n.embedding_length_per_layer_input"),
            c["hidden_size_per_layer_input"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3n.attention.shared_kv_layers"), c["num_kv_shared_layers"].get<uint32_t>());

  const auto& swa = m.get_array<bool>("gemma3n.attention.sliding_window_pattern");
  ASSERT_EQ(swa.size(), static_cast<size_t>(layers));
  for (int64_t l = 0; l < layers; ++l) EXPECT_EQ(swa[l], c["layer_types"][l] == "sliding_attention") << l;

  const auto& scale = m.get_array<float>("gemma3n.activation_sparsity_scale");
  ASSERT_EQ(scale.size(), static_cast<size_t>(layers));
  for (int64_t l = 0; l < layers; ++l) {
    const double s = c["activation_sparsity_pattern"][l];
    EXPECT_NEAR(scale[l], s == 0 ? 0.0 : probit_by_bisection(s), 1e-6) << l;
  }
  EXPECT_GT(scale[0], 1.6f);  // the fixture's first layers are 95% sparse

  // llama.cpp's order of the architecture keys; nothing else under gemma3n.
  std::vector<std::string> arch_keys;
  for (const auto& [key, value] : m.entries())
    if (key.starts_with("gemma3n.")) arch_keys.push_back(key.substr(8));
  const std::vector<std::string> want_keys = {"block_count",
                                              "context_length",
                                              "embedding_length",
                                              "feed_forward_length",
                                              "attention.head_count",
                                              "attention.head_count_kv",
                                              "rope.freq_base",
                                              "rope.freq_base_swa",
                                              "attention.layer_norm_rms_epsilon",
                                              "attention.key_length",
                                              "attention.value_length",
                                              "final_logit_softcapping",
                                              "attention.sliding_window",
                                              "altup.active_idx",
                                              "altup.num_inputs",
                                              "altup.correct_scale",
                                              "embedding_length_per_layer_input",
                                              "attention.shared_kv_layers",
                                              "activation_sparsity_scale",
                                              "attention.sliding_window_pattern"};
  EXPECT_EQ(arch_keys, want_keys);

  // One token per embedding row: text, image and audio ids.
  EXPECT_EQ(m.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(m.get_array<std::string>("tokenizer.ggml.tokens").size(), c["vocab_size"].get<size_t>());
  EXPECT_EQ(m.get_array<std::string>("tokenizer.ggml.tokens")[2], "<bos>");
  EXPECT_EQ(m.get_u32("tokenizer.ggml.bos_token_id"), 2u);
}

TEST(ConvertGemma3n, TinyBf16TensorsUnshiftedStackedAndPadded) {
  const fs::path src = fixture();
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), std::nullopt));
  const json c = text_config(src);
  const formats::SafetensorsCheckpoint st(src);
  expect_tensor_set(g, c, DType::BF16);

  // 3n norms multiply by w itself: copied as they are (widened to f32), never + 1.
  for (const auto& [dst, srcname] : vector_names(c)) {
    const Tensor* out = g.find(dst);
    const Tensor* in = st.find(srcname);
    ASSERT_TRUE(out && in) << dst;
    ASSERT_EQ(out->numel(), in->numel()) << dst;
    for (int64_t i = 0; i < in->numel(); ++i)
      ASSERT_EQ(test::f32_at(out->data + 4 * i), bf16_at(*in, i)) << dst << i;
  }
  // Matrices keep the checkpoint's bf16 bytes.
  for (const auto& [dst, srcname] : std::vector<std::pair<std::string, std::string>>{
           {"token_embd.weight", "embed_tokens.weight"},
           {"blk.9.laurel_r.weight", "layers.9.laurel.linear_right.weight"},
           {"blk.3.altup_predict_coef.weight", "layers.3.altup.prediction_coefs.weight"},
           {"blk.7.attn_k.weight", "layers.7.self_attn.k_proj.weight"}}) {
    const Tensor* a = g.find(dst);
    const Tensor* b = st.find(kPrefix + srcname);
    ASSERT_TRUE(a && b) << dst;
    ASSERT_EQ(a->nbytes, b->nbytes) << dst;
    EXPECT_EQ(std::memcmp(a->data, b->data, a->nbytes), 0) << dst;
  }
  // The stacked AltUp projections are the three matrices one after another.
  for (const auto& [dst, stem] : std::vector<std::pair<std::string, std::string>>{
           {"altup_proj.weight", "altup_projections"},
           {"altup_unembd_proj.weight", "altup_unembed_projections"}}) {
    const Tensor* stacked = g.find(dst);
    size_t offset = 0;
    for (int i = 0; i < c["altup_num_inputs"].get<int>() - 1; ++i) {
      const Tensor* part = st.find(kPrefix + stem + "." + std::to_string(i) + ".weight");
      ASSERT_TRUE(part) << stem << i;
      EXPECT_EQ(std::memcmp(stacked->data + offset, part->data, part->nbytes), 0) << dst << " part " << i;
      offset += part->nbytes;
    }
    EXPECT_EQ(offset, stacked->nbytes) << dst;
  }
  // The per-layer embedding: the text rows as they are, zero rows for the image and audio ids.
  const Tensor* per_layer = g.find("per_layer_token_embd.weight");
  const Tensor* per_layer_src = st.find(kPrefix + "embed_tokens_per_layer.weight");
  ASSERT_LT(per_layer_src->shape[0], per_layer->shape[0]);  // the fixture pads 1024 -> 1040 rows
  EXPECT_EQ(std::memcmp(per_layer->data, per_layer_src->data, per_layer_src->nbytes), 0);
  for (size_t i = per_layer_src->nbytes; i < per_layer->nbytes; ++i)
    ASSERT_EQ(per_layer->data[i], std::byte{0}) << "padding byte " << i;
}

TEST(ConvertGemma3n, TinyF32WidensEveryTensor) {
  const fs::path src = fixture();
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), convert::OutType::F32));
  const json c = text_config(src);
  EXPECT_EQ(g.metadata().get_u32("general.file_type"), 0u);  // ALL_F32
  expect_tensor_set(g, c, DType::F32);
  const formats::SafetensorsCheckpoint st(src);
  const Tensor* stacked = g.find("altup_unembd_proj.weight");
  int64_t k = 0;
  for (int i = 0; i < 3; ++i) {
    const Tensor* part = st.find(kPrefix + "altup_unembed_projections." + std::to_string(i) + ".weight");
    for (int64_t j = 0; j < part->numel(); ++j, ++k)
      ASSERT_EQ(test::f32_at(stacked->data + 4 * k), bf16_at(*part, j)) << i << "," << j;
  }
  const Tensor* per_layer = g.find("per_layer_token_embd.weight");
  const int64_t text_values = st.find(kPrefix + "embed_tokens_per_layer.weight")->numel();
  for (int64_t i = text_values; i < per_layer->numel(); ++i)
    ASSERT_EQ(test::f32_at(per_layer->data + 4 * i), 0.0f) << i;
}

TEST(ConvertGemma3n, CorrectionCoefsAreClippedToAltupCoefClip) {
  // The fixture's coefficients peak at |0.26| against a clip of 120: clip at 0.1 to see it act.
  constexpr float kClip = 0.1f;
  EditedCopy copy([&](json& tc) { tc["altup_coef_clip"] = kClip; });
  const GgufFile g(test::convert_fixture(copy.src, copy.out.parent_path(), convert::OutType::F32));
  const formats::SafetensorsCheckpoint st(fixture());
  int clipped = 0, beyond_clip_predictions = 0;
  for (int l = 0; l < 10; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", s = kPrefix + "layers." + std::to_string(l) + ".";
    const Tensor* out = g.find(b + "altup_correct_coef.weight");
    const Tensor* in = st.find(s + "altup.correction_coefs.weight");
    for (int64_t i = 0; i < in->numel(); ++i) {
      const float v = bf16_at(*in, i);
      clipped += std::abs(v) > kClip;
      ASSERT_EQ(test::f32_at(out->data + 4 * i), std::clamp(v, -kClip, kClip)) << b << i;
    }
    // Only the correction coefficients: transformers clamps the prediction ones in training alone.
    const Tensor* pred_out = g.find(b + "altup_predict_coef.weight");
    const Tensor* pred_in = st.find(s + "altup.prediction_coefs.weight");
    for (int64_t i = 0; i < pred_in->numel(); ++i) {
      beyond_clip_predictions += std::abs(bf16_at(*pred_in, i)) > kClip;
      ASSERT_EQ(test::f32_at(pred_out->data + 4 * i), bf16_at(*pred_in, i)) << b << i;
    }
  }
  EXPECT_GT(clipped, 10);
  EXPECT_GT(beyond_clip_predictions, 10);
}

TEST(ConvertGemma3n, AudioAndVisionTowersAreLeftOut) {
  const fs::path src = fixture();
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), std::nullopt));
  const formats::SafetensorsCheckpoint st(src);
  int towers = 0;
  for (const Tensor* t : st.all())
    towers += t->name.find("audio") != std::string::npos || t->name.find("vision") != std::string::npos;
  EXPECT_GT(towers, 50);  // the fixture has both towers and both embedders
  for (const Tensor* t : g.all()) {
    EXPECT_EQ(t->name.find("audio"), std::string::npos) << t->name;
    EXPECT_EQ(t->name.find("vision"), std::string::npos) << t->name;
    EXPECT_EQ(t->name.find("embed_"), std::string::npos) << t->name;
  }
}

TEST(ConvertGemma3n, WrongLengthSparsityPatternIsAClearErrorAndLeavesNoFile) {
  EditedCopy copy([](json& tc) { tc["activation_sparsity_pattern"].erase(0); });
  const std::string err = copy.convert_error();
  EXPECT_NE(err.find("config.json"), std::string::npos) << err;
  EXPECT_NE(err.find("activation_sparsity_pattern"), std::string::npos) << err;
  EXPECT_NE(err.find("num_hidden_layers (10)"), std::string::npos) << err;
  EXPECT_TRUE(copy.output_dir_empty());
}

TEST(ConvertGemma3n, WrongLengthLayerTypesIsAClearError) {
  EditedCopy copy([](json& tc) { tc["layer_types"].push_back("sliding_attention"); });
  const std::string err = copy.convert_error();
  EXPECT_NE(err.find("config.json: text_config: layer_types"), std::string::npos) << err;
  EXPECT_TRUE(copy.output_dir_empty());
}

TEST(ConvertGemma3n, AltupInputsUnlikeTheStackedProjectionsIsAClearError) {
  EditedCopy copy([](json& tc) { tc["altup_num_inputs"] = 3; });
  const std::string err = copy.convert_error();
  EXPECT_NE(err.find("config.json: altup_num_inputs is 3"), std::string::npos) << err;
  EXPECT_NE(err.find("altup_projections"), std::string::npos) << err;
  EXPECT_TRUE(copy.output_dir_empty());
}

}  // namespace
}  // namespace ge
