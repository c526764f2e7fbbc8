#include "loader/mmproj.h"

#include <map>
#include <stdexcept>

#include "loader/gguf_model.h"

namespace ge::loader {
namespace {

using formats::GgufFile;

[[noreturn]] void fail(const GgufFile& f, const std::string& what) {
  throw std::runtime_error(f.path().string() + ": " + what);
}

int64_t positive(const GgufFile& f, const std::string& key) {
  const uint32_t n = f.metadata().get_u32(key);
  if (n == 0) fail(f, "metadata key '" + key + "' must be positive");
  return n;
}

void check_gemma3_clip(const GgufFile& f) {
  const auto& m = f.metadata();
  const std::string arch = m.find<std::string>("general.architecture").value_or("(none)");
  if (arch != "clip") fail(f, "general.architecture '" + arch + "' is not 'clip': not an mmproj file");
  if (!m.find<bool>("clip.has_vision_encoder").value_or(false))
    fail(f, "clip.has_vision_encoder is false or missing: the file has no vision encoder");
  // Files with both an audio and a vision encoder name each side's projector under its own key.
  const std::string key =
      m.value("clip.vision.projector_type") ? "clip.vision.projector_type" : "clip.projector_type";
  const std::string& type = m.get_string(key);
  if (type != "gemma3")
    fail(f, key + " '" + type + "' is not 'gemma3' (only Gemma 3's projector is supported)");
}

const std::string kTower = "vision_tower.vision_model.";
const std::string kProjector = "multi_modal_projector.";

// GGUF module name -> Hugging Face module path, outside the encoder blocks.
const std::map<std::string, std::string, std::less<>>& top_level_names() {
  static const std::map<std::string, std::string, std::less<>> m = {
      {"v.patch_embd", kTower + "embeddings.patch_embedding"},
      {"v.position_embd", kTower + "embeddings.position_embedding"},
      {"v.post_ln", kTower + "post_layernorm"},
      {"mm.soft_emb_norm", kProjector + "mm_soft_emb_norm"},
  };
  return m;
}

// GGUF module name within "v.blk.N." -> Hugging Face module path within "encoder.layers.N.".
const std::map<std::string, std::string, std::less<>>& layer_names() {
  static const std::map<std::string, std::string, std::less<>> m = {
      {"ln1", "layer_norm1"},
      {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},
      {"attn_out", "self_attn.out_proj"},
      {"ln2", "layer_norm2"},
      {"ffn_up", "mlp.fc1"},
      {"ffn_down", "mlp.fc2"},
  };
  return m;
}

// llama.cpp's first Gemma 3 script (examples/llava/gemma3_convert_encoder_to_gguf.py) named fc1 ffn_down and
// fc2 ffn_up. llama.cpp's loader swaps a block's pair back when ffn_down takes the hidden size as input, and
// so do we (when the two sizes are equal the shapes cannot tell, and the names are taken at their word).
bool ffn_swapped(const GgufFile& f, const std::string& block, int64_t hidden) {
  const Tensor* down = f.find(block + "ffn_down.weight");
  return down && down->shape.size() == 2 && down->shape[1] == hidden && down->shape[0] != hidden;
}

std::string hf_name(const GgufFile& f, const std::string& name, int64_t hidden) {
  if (name == "mm.input_projection.weight") return kProjector + "mm_input_projection_weight";
  const size_t dot = name.rfind('.');
  const std::string module = name.substr(0, dot), suffix = dot == std::string::npos ? "" : name.substr(dot);
  if (suffix == ".weight" || suffix == ".bias") {
    if (const auto it = top_level_names().find(module); it != top_level_names().end())
      return it->second + suffix;
    const size_t block_end = module.find('.', 6);
    if (module.starts_with("v.blk.") && block_end != std::string::npos) {
      const std::string layer = module.substr(6, block_end - 6);
      std::string gguf_module = module.substr(block_end + 1);
      if (ffn_swapped(f, module.substr(0, block_end + 1), hidden)) {
        if (gguf_module == "ffn_up")
          gguf_module = "ffn_down";
        else if (gguf_module == "ffn_down")
          gguf_module = "ffn_up";
      }
      if (const auto it = layer_names().find(gguf_module); it != layer_names().end())
        return kTower + "encoder.layers." + layer + "." + it->second + suffix;
    }
  }
  fail(f, "tensor '" + name + "' is not part of a Gemma 3 vision tower or projector");
}


std::array<float, 3> rgb_values(const GgufFile& f, const std::string& key) {
  const std::vector<float>& v = f.metadata().get_array<float>(key);
  if (v.size() != 3) fail(f, key + " has " + std::to_string(v.size()) + " values, not 3 (R, G, B)");
  return {v[0], v[1], v[2]};
}

}  // namespace

siglip::Gemma3VisionConfig vision_config_from_mmproj(const GgufFile& f, int64_t text_hidden_size,
                                                     const std::string& text_model_name,
                                                     int32_t image_token_id, int32_t boi_token_id,
                                                     int32_t eoi_token_id) {
  check_gemma3_clip(f);
  const auto& m = f.metadata();
  const int64_t projection_dim = positive(f, "clip.vision.projection_dim");
  if (projection_dim != text_hidden_size)
    fail(f, "clip.vision.projection_dim " + std::to_string(projection_dim) +
                " is not the text model's hidden size " + std::to_string(text_hidden_size) + " (" +
                text_model_name + ")");

  siglip::Gemma3VisionConfig c;
  siglip::VisionConfig& v = c.vision;
  v.hidden_size = positive(f, "clip.vision.embedding_length");
  v.intermediate_size = positive(f, "clip.vision.feed_forward_length");
  v.num_layers = positive(f, "clip.vision.block_count");
  v.num_heads = positive(f, "clip.vision.attention.head_count");
  v.num_channels = 3;  // no key carries it: mtmd feeds RGB
  v.image_size = positive(f, "clip.vision.image_size");
  v.patch_size = positive(f, "clip.vision.patch_size");
  v.layer_norm_eps = m.get_f32("clip.vision.attention.layer_norm_epsilon");
  if (v.hidden_size % v.num_heads != 0)
    fail(f, "clip.vision.embedding_length " + std::to_string(v.hidden_size) +
                " is not a multiple of clip.vision.attention.head_count " + std::to_string(v.num_heads));
  if (v.patch_size > v.image_size)
    fail(f, "clip.vision.patch_size " + std::to_string(v.patch_size) + " exceeds clip.vision.image_size " +
                std::to_string(v.image_size));

  // mtmd's default for gemma3; only other poolings (test models) write the key.
  const int64_t pooling = m.find<uint32_t>("clip.vision.projector.scale_factor").value_or(4);
  if (pooling == 0 || v.patches_per_side() % pooling != 0)
    fail(f, "clip.vision.projector.scale_factor " + std::to_string(pooling) + " does not divide the " +
                std::to_string(v.patches_per_side()) + " patches per side");
  const int64_t side = v.patches_per_side() / pooling;
  c.mm_tokens_per_image = side * side;
  c.text_hidden_size = text_hidden_size;
  c.image_token_id = image_token_id;
  c.boi_token_id = boi_token_id;
  c.eoi_token_id = eoi_token_id;
  return c;
}

std::unique_ptr<TensorSource> hf_named_vision_tensors(std::unique_ptr<GgufFile> file) {
  check_gemma3_clip(*file);
  const int64_t hidden = positive(*file, "clip.vision.embedding_length");
  const GgufFile& f = *file;
  return renamed_tensors(std::move(file), [&](const std::string& name) { return hf_name(f, name, hidden); });
}

ImageNormalization image_normalization_from_mmproj(const GgufFile& f) {
  return {rgb_values(f, "clip.vision.image_mean"), rgb_values(f, "clip.vision.image_std")};
}

}  // namespace ge::loader
