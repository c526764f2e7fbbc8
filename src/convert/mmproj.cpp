// Gemma 3's SigLIP vision tower and multi-modal projector -> the "clip" GGUF that llama.cpp's mtmd loads
// beside the text model (`--mmproj`, projector_type gemma3), following llama.cpp's converter (MmprojModel,
// Gemma3VisionModel): its metadata keys in its order, its tensor names, its forced types, and the
// projector's soft-embedding norm stored as w + 1 (a Gemma RMSNorm; SigLIP's own LayerNorms are plain).

#include "convert/conversion.h"
#include "formats/json_file.h"
#include "models/config_fields.h"
#include "models/gemma/config.h"
#include "models/siglip/config.h"

namespace ge::convert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using siglip::VisionConfig;

VisionConfig vision_config(const Checkpoint& ckpt) {
  const std::string where = (ckpt.dir / "config.json").string();
  if (!siglip::has_vision_config(ckpt.config))
    fail(where + ": no vision_config object, so no vision tower to convert");
  return siglip::resolve_vision_config(ckpt.config["vision_config"], where);
}

// preprocessor_config.json overlaid with processor_config.json, as llama.cpp merges them; newer
// transformers nest the image processor's keys under "image_processor" in the latter.
json processor_config(const fs::path& dir) {
  json merged = json::object();
  for (const char* name : {"preprocessor_config.json", "processor_config.json"}) {
    const fs::path file = dir / name;
    if (!fs::is_regular_file(file)) continue;
    json j = formats::read_json_file(file);
    if (!j.is_object()) fail(file.string() + ": expected a JSON object");
    if (j.contains("image_processor") && j["image_processor"].is_object()) {
      const json nested = j["image_processor"];
      j.update(nested);
    }
    merged.update(j);
  }
  return merged;
}

// image_mean or image_std: one value per colour channel; the runtime normalises pixels with them, so a
// missing one cannot be guessed.
std::vector<float> channel_values(const json& processor, const std::string& key, int64_t channels,
                                  const fs::path& dir) {
  const std::string where = (dir / "preprocessor_config.json").string();
  if (!processor.contains(key))
    fail(where + ": " + key + " not found (nor in processor_config.json); the mmproj file needs it");
  const json& v = processor[key];
  if (!v.is_array() || static_cast<int64_t>(v.size()) != channels)
    fail(where + ": " + key + " must be a list of " + std::to_string(channels) + " numbers, not " + v.dump());
  std::vector<float> out;
  for (const json& x : v) {
    if (!x.is_number()) fail(where + ": " + key + " must be a list of numbers, not " + v.dump());
    out.push_back(x.get<float>());
  }
  return out;
}

// The projector average-pools the patch grid down to mm_tokens_per_image soft tokens; the pooling kernel
// (patches per side / tokens per side) is what llama.cpp calls the projector scale factor.
int64_t pooling_factor(const Checkpoint& ckpt, const json& processor, int64_t text_hidden) {
  const std::string where = (ckpt.dir / "config.json").string();
  const siglip::Gemma3VisionConfig c = siglip::resolve_gemma3_vision_config(ckpt.config, text_hidden, where);
  // llama.cpp reads the token count from the processor; both must agree for the GGUF to mean this model.
  if (processor.contains("image_seq_length") && processor["image_seq_length"] != c.mm_tokens_per_image)
    fail(where + ": mm_tokens_per_image " + std::to_string(c.mm_tokens_per_image) +
         " disagrees with the processor's image_seq_length " + processor["image_seq_length"].dump());
  return c.pooling();
}

void add_metadata(formats::GgufWriter& w, const Checkpoint& ckpt, const VisionConfig& v, int64_t text_hidden,
                  OutType out_type) {
  const json processor = processor_config(ckpt.dir);
  const int64_t pooling = pooling_factor(ckpt, processor, text_hidden);
  const auto u32 = [](int64_t x) { return static_cast<uint32_t>(x); };

  add_general(w, "clip", ckpt.dir, "mmproj");
  w.add("general.file_type", file_type_id(out_type));
  w.add("clip.has_vision_encoder", true);
  w.add("clip.vision.projection_dim", u32(text_hidden));
  w.add("clip.vision.image_size", u32(v.image_size));
  w.add("clip.vision.patch_size", u32(v.patch_size));
  w.add("clip.vision.embedding_length", u32(v.hidden_size));
  w.add("clip.vision.feed_forward_length", u32(v.intermediate_size));
  w.add("clip.vision.block_count", u32(v.num_layers));
  w.add("clip.vision.attention.head_count", u32(v.num_heads));
  w.add("clip.vision.image_mean", channel_values(processor, "image_mean", v.num_channels, ckpt.dir));
  w.add("clip.vision.image_std", channel_values(processor, "image_std", v.num_channels, ckpt.dir));
  w.add("clip.projector_type", std::string("gemma3"));
  w.add("clip.vision.attention.layer_norm_epsilon", static_cast<float>(v.layer_norm_eps));
  w.add("clip.use_gelu", true);
  // mtmd assumes 4 (every published Gemma 3); only other poolings (test models) are written.
  if (pooling != 4) w.add("clip.vision.projector.scale_factor", u32(pooling));
  w.add("general.quantization_version", uint32_t{2});
}

// Checkpoints saved by transformers >= 4.52 nest the towers under "model.".
std::string checkpoint_prefix(const Checkpoint& ckpt) {
  return ckpt.tensors.find("model.vision_tower.vision_model.embeddings.patch_embedding.weight") ? "model."
                                                                                                : "";
}

void plan_encoder_layers(const VisionConfig& v, const std::string& enc, TensorPlan& plan) {
  const int64_t d = v.hidden_size, ff = v.intermediate_size;
  for (int64_t l = 0; l < v.num_layers; ++l) {
    const std::string src = enc + "encoder.layers." + std::to_string(l) + ".";
    const std::string dst = "v.blk." + std::to_string(l) + ".";
    // HF module -> GGUF name, each with a weight and a bias.
    const auto linear = [&](const std::string& gguf, const std::string& hf, int64_t rows, int64_t cols) {
      plan.add(dst + gguf + ".weight", src + hf + ".weight", {rows, cols});
      plan.add(dst + gguf + ".bias", src + hf + ".bias", {rows});
    };
    const auto layer_norm = [&](const std::string& gguf, const std::string& hf) {
      plan.add(dst + gguf + ".weight", src + hf + ".weight", {d});
      plan.add(dst + gguf + ".bias", src + hf + ".bias", {d});
    };
    layer_norm("ln1", "layer_norm1");
    linear("attn_q", "self_attn.q_proj", d, d);
    linear("attn_k", "self_attn.k_proj", d, d);
    linear("attn_v", "self_attn.v_proj", d, d);
    linear("attn_out", "self_attn.out_proj", d, d);
    layer_norm("ln2", "layer_norm2");
    linear("ffn_up", "mlp.fc1", ff, d);
    linear("ffn_down", "mlp.fc2", d, ff);
  }
}

void plan_tensors(const VisionConfig& v, int64_t text_hidden, const std::string& prefix, TensorPlan& plan) {
  const std::string enc = prefix + "vision_tower.vision_model.";
  const std::string proj = prefix + "multi_modal_projector.";
  const int64_t d = v.hidden_size, n_patches = v.patches_per_side() * v.patches_per_side();
  // llama.cpp keeps the embeddings f32 whatever the output type; the conv weight stays [out, in, kh, kw].
  plan.add("v.patch_embd.weight", enc + "embeddings.patch_embedding.weight",
           {d, v.num_channels, v.patch_size, v.patch_size})
      .out = DType::F32;
  plan.add("v.patch_embd.bias", enc + "embeddings.patch_embedding.bias", {d});
  plan.add("v.position_embd.weight", enc + "embeddings.position_embedding.weight", {n_patches, d}).out =
      DType::F32;
  plan_encoder_layers(v, enc, plan);
  plan.add("v.post_ln.weight", enc + "post_layernorm.weight", {d});
  plan.add("v.post_ln.bias", enc + "post_layernorm.bias", {d});
  // A bare parameter [vision hidden, text hidden], used as x @ W; llama.cpp forces it to f16 whatever the
  // output type (quantizing it broke the projector: llama.cpp issue 13025).
  plan.add("mm.input_projection.weight", proj + "mm_input_projection_weight", {d, text_hidden}).out =
      DType::F16;
  plan.add("mm.soft_emb_norm.weight", proj + "mm_soft_emb_norm.weight", {d}).add = 1.0f;
}

// What the mmproj file leaves out: the text model (it goes to the text GGUF) and SigLIP's pooling head,
// which Gemma 3 never runs (llama.cpp drops it too).
bool is_not_projector(std::string_view name) {
  return name.find("language_model.") != std::string_view::npos || name == "lm_head.weight" ||
         name.find("vision_model.head.") != std::string_view::npos;
}

}  // namespace

std::string convert_gemma3_mmproj(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                                  TensorPlan& plan) {
  const VisionConfig v = vision_config(ckpt);
  // The projector maps into the text model's embedding space.
  const int64_t text_hidden =
      gemma::resolve_config(ckpt.config, (ckpt.dir / "config.json").string()).hidden_size;
  add_metadata(w, ckpt, v, text_hidden, out_type);
  plan_tensors(v, text_hidden, checkpoint_prefix(ckpt), plan);
  plan.check_all_used(is_not_projector, "a Gemma 3 vision tower with " + std::to_string(v.num_layers) +
                                            " layers and its projector (config.json)");
  return "clip";
}

}  // namespace ge::convert
