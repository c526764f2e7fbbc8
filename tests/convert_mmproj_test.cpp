// `gemma convert --mmproj` for Gemma 3: the vision tower and projector as llama.cpp's "clip" GGUF, read back
// with our reader and checked against values computed here from the fixture's own files (config.json,
// preprocessor_config.json, the safetensors).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>

#include "convert/gguf_convert.h"
#include "convert_test_util.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using formats::GgufFile;
using nlohmann::json;

const fs::path& vision_fixture() {
  static const fs::path p = test::fixture_model_dir("gemma3-tiny-vision");
  return p;
}

fs::path convert_mmproj(const fs::path& src, const fs::path& out_dir, std::optional<convert::OutType> type) {
  const fs::path out = out_dir / "mmproj.gguf";
  convert::convert_mmproj_to_gguf(src, out, {.out_type = type, .progress = {}});
  return out;
}

std::string mmproj_error(const fs::path& src, const fs::path& out) {
  return test::error_of([&] { convert::convert_mmproj_to_gguf(src, out); });
}

// The source value i of a tensor, whatever its float dtype.
float value_at(const Tensor& t, size_t i) {
  switch (t.dtype) {
    case DType::F32:
      return test::f32_at(t.data + 4 * i);
    case DType::BF16:
      return bf16_to_f32(test::u16_at(t.data + 2 * i));
    case DType::F16:
      return f16_to_f32(test::u16_at(t.data + 2 * i));
    default:
      ADD_FAILURE() << t.name << ": unexpected dtype";
      return 0;
  }
}

// Every value of `out` equals the source's + add, rounded as `out`'s dtype rounds.
void expect_values(const GgufFile& g, const std::string& out_name, const formats::SafetensorsCheckpoint& st,
                   const std::string& src_name, float add = 0) {
  const Tensor* out = g.find(out_name);
  const Tensor* in = st.find(src_name);
  ASSERT_TRUE(out && in) << out_name;
  ASSERT_EQ(out->numel(), in->numel()) << out_name;
  for (size_t i = 0; i < static_cast<size_t>(in->numel()); ++i) {
    float want = value_at(*in, i) + add;
    if (out->dtype == DType::F16) want = f16_to_f32(f32_to_f16(want));
    if (out->dtype == DType::BF16) want = bf16_to_f32(f32_to_bf16(want));
    ASSERT_EQ(value_at(*out, i), want) << out_name << "[" << i << "]";
  }
}

// Names, shapes (outermost first) and types of every tensor, from config.json's vision_config.
void expect_tensors(const GgufFile& g, const json& config, DType matrix) {
  const json& vc = config["vision_config"];
  const int64_t d = vc["hidden_size"], ff = vc["intermediate_size"], layers = vc["num_hidden_layers"];
  const int64_t patch = vc["patch_size"], side = vc["image_size"].get<int64_t>() / patch;
  const int64_t text_hidden = config["text_config"]["hidden_size"];
  std::map<std::string, std::pair<std::vector<int64_t>, DType>> want;
  // llama.cpp keeps the embeddings f32 and the input projection f16 whatever the output type.
  want["v.patch_embd.weight"] = {{d, 3, patch, patch}, DType::F32};
  want["v.patch_embd.bias"] = {{d}, DType::F32};
  want["v.position_embd.weight"] = {{side * side, d}, DType::F32};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string b = "v.blk." + std::to_string(l) + ".";
    for (const char* m : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
      want[b + m + ".weight"] = {{d, d}, matrix};
      want[b + m + ".bias"] = {{d}, DType::F32};
    }
    for (const char* n : {"ln1", "ln2"}) {
      want[b + n + ".weight"] = {{d}, DType::F32};
      want[b + n + ".bias"] = {{d}, DType::F32};
    }
    want[b + "ffn_up.weight"] = {{ff, d}, matrix};
    want[b + "ffn_up.bias"] = {{ff}, DType::F32};
    want[b + "ffn_down.weight"] = {{d, ff}, matrix};
    want[b + "ffn_down.bias"] = {{d}, DType::F32};
  }
  want["v.post_ln.weight"] = {{d}, DType::F32};
  want["v.post_ln.bias"] = {{d}, DType::F32};
  want["mm.input_projection.weight"] = {{d, text_hidden}, DType::F16};
  want["mm.soft_emb_norm.weight"] = {{d}, DType::F32};
  ASSERT_EQ(want.size(), static_cast<size_t>(3 + 16 * layers + 4));
  ASSERT_EQ(g.all().size(), want.size());
  for (const Tensor* t : g.all()) {
    const auto it = want.find(t->name);
    ASSERT_NE(it, want.end()) << "unexpected tensor " << t->name;  // no text tensor among them
    EXPECT_EQ(t->shape, it->second.first) << t->name;
    EXPECT_EQ(t->dtype, it->second.second) << t->name;
  }
}

// Every key with its value, in llama.cpp's order (MmprojModel's keys, then Gemma3VisionModel's).
void expect_metadata(const formats::GgufMetadata& m, const json& config, const json& preprocessor,
                     uint32_t file_type) {
  const json& vc = config["vision_config"];
  std::vector<std::string> keys;
  for (const auto& [k, v] : m.entries()) keys.push_back(k);
  EXPECT_EQ(keys,
            (std::vector<std::string>{
                "general.architecture", "general.type", "general.name", "general.file_type",
                "clip.has_vision_encoder", "clip.vision.projection_dim", "clip.vision.image_size",
                "clip.vision.patch_size", "clip.vision.embedding_length", "clip.vision.feed_forward_length",
                "clip.vision.block_count", "clip.vision.attention.head_count", "clip.vision.image_mean",
                "clip.vision.image_std", "clip.projector_type", "clip.vision.attention.layer_norm_epsilon",
                "clip.use_gelu", "general.quantization_version"}));
  EXPECT_EQ(m.get_string("general.architecture"), "clip");
  EXPECT_EQ(m.get_string("general.type"), "mmproj");
  EXPECT_EQ(m.get_string("general.name"), vision_fixture().filename().string());
  EXPECT_EQ(m.get_u32("general.file_type"), file_type);
  EXPECT_TRUE(m.get_bool("clip.has_vision_encoder"));
  EXPECT_EQ(m.get_u32("clip.vision.projection_dim"), config["text_config"]["hidden_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("clip.vision.image_size"), vc["image_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("clip.vision.patch_size"), vc["patch_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("clip.vision.embedding_length"), vc["hidden_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("clip.vision.feed_forward_length"), vc["intermediate_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("clip.vision.block_count"), vc["num_hidden_layers"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("clip.vision.attention.head_count"), vc["num_attention_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_array<float>("clip.vision.image_mean"),
            preprocessor["image_mean"].get<std::vector<float>>());
  EXPECT_EQ(m.get_array<float>("clip.vision.image_std"), preprocessor["image_std"].get<std::vector<float>>());
  EXPECT_EQ(m.get_string("clip.projector_type"), "gemma3");
  // The fixture leaves it out: SiglipVisionConfig's default.
  EXPECT_FLOAT_EQ(m.get_f32("clip.vision.attention.layer_norm_epsilon"), vc.value("layer_norm_eps", 1e-6f));
  EXPECT_TRUE(m.get_bool("clip.use_gelu"));
  EXPECT_EQ(m.get_u32("general.quantization_version"), 2u);
}

TEST(ConvertMmproj, Gemma3TinyVisionDefaultTypeKeysTensorsAndValues) {
  test::ScratchDir dir;
  const GgufFile g(convert_mmproj(vision_fixture(), dir.path(), std::nullopt));
  const json config = test::read_json(vision_fixture() / "config.json");
  const json preprocessor = test::read_json(vision_fixture() / "preprocessor_config.json");
  // 16x16 patches pooled to mm_tokens_per_image = 16 (4x4): mtmd's default factor 4, so no scale key.
  ASSERT_EQ(config["mm_tokens_per_image"], 16);
  expect_metadata(g.metadata(), config, preprocessor, 32);  // MOSTLY_BF16: the checkpoint's dtype
  expect_tensors(g, config, DType::BF16);

  const formats::SafetensorsCheckpoint st(vision_fixture());
  const std::string enc = "vision_tower.vision_model.";
  expect_values(g, "v.patch_embd.weight", st, enc + "embeddings.patch_embedding.weight");
  expect_values(g, "v.position_embd.weight", st, enc + "embeddings.position_embedding.weight");
  expect_values(g, "v.blk.1.attn_q.weight", st, enc + "encoder.layers.1.self_attn.q_proj.weight");
  expect_values(g, "v.blk.0.ffn_down.weight", st, enc + "encoder.layers.0.mlp.fc2.weight");
  // SigLIP's LayerNorms are stored as they are; only the projector's Gemma RMSNorm gets its + 1.
  expect_values(g, "v.blk.0.ln1.weight", st, enc + "encoder.layers.0.layer_norm1.weight");
  expect_values(g, "v.post_ln.bias", st, enc + "post_layernorm.bias");
  expect_values(g, "mm.input_projection.weight", st, "multi_modal_projector.mm_input_projection_weight");
  expect_values(g, "mm.soft_emb_norm.weight", st, "multi_modal_projector.mm_soft_emb_norm.weight", 1.0f);
}

TEST(ConvertMmproj, F32AndQ8_0KeepTheForcedTypes) {
  test::ScratchDir dir;
  const json config = test::read_json(vision_fixture() / "config.json");
  const json preprocessor = test::read_json(vision_fixture() / "preprocessor_config.json");
  const formats::SafetensorsCheckpoint st(vision_fixture());
  {
    const GgufFile g(convert_mmproj(vision_fixture(), dir.path(), convert::OutType::F32));
    expect_metadata(g.metadata(), config, preprocessor, 0);  // ALL_F32
    expect_tensors(g, config, DType::F32);
    expect_values(g, "v.blk.0.attn_k.weight", st,
                  "vision_tower.vision_model.encoder.layers.0.self_attn.k_proj.weight");
    expect_values(g, "mm.input_projection.weight", st, "multi_modal_projector.mm_input_projection_weight");
  }
  const GgufFile g(convert_mmproj(vision_fixture(), dir.path(), convert::OutType::Q8_0));
  expect_metadata(g.metadata(), config, preprocessor, 7);  // MOSTLY_Q8_0
  expect_tensors(g, config, DType::Q8_0);
}

// A copy of the fixture to break, and an output folder that must stay empty.
struct BrokenCopy : test::CheckpointCopy {
  BrokenCopy() : CheckpointCopy(vision_fixture(), "gemma3-tiny-vision", "mmproj.gguf") {}
};

TEST(ConvertMmproj, TextOnlyCheckpointIsAClearErrorAndLeavesNoFile) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "mmproj.gguf";
  const std::string err = mmproj_error(test::fixture_model_dir("gemma3-tiny-rope"), out);
  EXPECT_NE(err.find("model_type 'gemma3_text' has no vision projector"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(ConvertMmproj, MissingVisionTensorIsAClearErrorAndLeavesNoFile) {
  BrokenCopy b;
  const std::string name = "vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight";
  test::edit_safetensors_header(b.src / "model.safetensors", [&](json& h) { ASSERT_EQ(h.erase(name), 1u); });
  const std::string err = mmproj_error(b.src, b.out);
  EXPECT_NE(err.find("'" + name + "' is missing"), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

TEST(ConvertMmproj, MissingImageMeanIsAClearErrorAndLeavesNoFile) {
  BrokenCopy b;
  fs::remove(b.src / "preprocessor_config.json");
  const std::string err = mmproj_error(b.src, b.out);
  EXPECT_NE(err.find("image_mean not found"), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

TEST(ConvertMmproj, ImageMeanNestedInProcessorConfigIsRead) {
  BrokenCopy b;
  // Newer transformers save only processor_config.json, with the image processor's keys nested.
  json pre = test::read_json(b.src / "preprocessor_config.json");
  pre["image_mean"] = {0.25, 0.5, 0.75};
  std::ofstream(b.src / "processor_config.json") << json{{"image_processor", pre}}.dump(2);
  fs::remove(b.src / "preprocessor_config.json");
  const GgufFile g(convert_mmproj(b.src, b.out.parent_path(), std::nullopt));
  EXPECT_EQ(g.metadata().get_array<float>("clip.vision.image_mean"),
            (std::vector<float>{0.25f, 0.5f, 0.75f}));
}

// 16x16 patches pooled to 8x8 soft tokens: a factor other than mtmd's default 4 is written out.
TEST(ConvertMmproj, OtherPoolingWritesTheProjectorScaleFactor) {
  BrokenCopy b;
  json config = test::read_json(b.src / "config.json");
  config["mm_tokens_per_image"] = 64;
  std::ofstream(b.src / "config.json") << config.dump(2);
  for (const char* name : {"preprocessor_config.json", "processor_config.json"}) {
    json p = test::read_json(b.src / name);
    p["image_seq_length"] = 64;
    std::ofstream(b.src / name) << p.dump(2);
  }
  const GgufFile g(convert_mmproj(b.src, b.out.parent_path(), std::nullopt));
  EXPECT_EQ(g.metadata().get_u32("clip.vision.projector.scale_factor"), 2u);
}

TEST(ConvertMmproj, TokensPerImageDisagreeingWithTheProcessorIsAClearError) {
  BrokenCopy b;
  json config = test::read_json(b.src / "config.json");
  config["mm_tokens_per_image"] = 64;
  std::ofstream(b.src / "config.json") << config.dump(2);
  const std::string err = mmproj_error(b.src, b.out);
  EXPECT_NE(err.find("mm_tokens_per_image 64 disagrees"), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

}  // namespace
}  // namespace ge
