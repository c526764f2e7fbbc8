#include "models/siglip/config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "models/config_fields.h"

namespace ge::siglip {

namespace {

using nlohmann::json;

// Constructor defaults of transformers' SiglipVisionConfig, for the keys a vision_config leaves out.
const json& siglip_defaults() {
  static const json d = {
      {"hidden_size", 768},        {"intermediate_size", 3072}, {"num_hidden_layers", 12},
      {"num_attention_heads", 12}, {"num_channels", 3},         {"image_size", 224},
      {"patch_size", 16},          {"layer_norm_eps", 1e-6},
  };
  return d;
}

// Gemma3Config's constructor defaults for its multimodal keys.
const json& gemma3_defaults() {
  static const json d = {{"mm_tokens_per_image", 256},
                         {"image_token_index", 262144},
                         {"boi_token_index", 255999},
                         {"eoi_token_index", 256000}};
  return d;
}

}  // namespace

VisionConfig resolve_vision_config(const json& vision_config, const std::string& where) {
  const std::string at = where + ": vision_config";
  if (!vision_config.is_object()) throw std::runtime_error(at + ": must be an object");
  const models::ConfigFields f(vision_config, siglip_defaults(), at);
  VisionConfig v;
  v.hidden_size = f.integer("hidden_size");
  v.intermediate_size = f.integer("intermediate_size");
  v.num_layers = f.integer("num_hidden_layers", 1, models::kMaxLayers);
  v.num_heads = f.integer("num_attention_heads");
  v.num_channels = f.integer("num_channels");
  v.image_size = f.integer("image_size");
  v.patch_size = f.integer("patch_size");
  v.layer_norm_eps = f.number("layer_norm_eps");
  if (v.hidden_size % v.num_heads != 0)
    f.fail("hidden_size", std::to_string(v.hidden_size) + " is not a multiple of num_attention_heads " +
                              std::to_string(v.num_heads));
  if (v.patch_size > v.image_size)
    f.fail("patch_size", std::to_string(v.patch_size) + " exceeds image_size " + std::to_string(v.image_size));
  return v;
}

bool has_vision_config(const json& config) {
  return config.is_object() && config.contains("vision_config") && config["vision_config"].is_object();
}

bool is_vision_tensor(std::string_view name) {
  return name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") ||
         name.starts_with("model.vision_tower.") || name.starts_with("model.multi_modal_projector.");
}

int64_t Gemma3VisionConfig::tokens_per_side() const {
  return static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(mm_tokens_per_image))));
}

Gemma3VisionConfig resolve_gemma3_vision_config(const json& config, int64_t text_hidden_size,
                                                const std::string& where) {
  if (!has_vision_config(config))
    throw std::runtime_error(where + ": no vision_config: this model has no vision tower (it reads text only)");
  const models::ConfigFields f(config, gemma3_defaults(), where);
  Gemma3VisionConfig c;
  c.vision = resolve_vision_config(config["vision_config"], where);
  c.mm_tokens_per_image = f.integer("mm_tokens_per_image");
  c.text_hidden_size = text_hidden_size;
  c.image_token_id = static_cast<int32_t>(f.integer("image_token_index", 0));
  c.boi_token_id = static_cast<int32_t>(f.integer("boi_token_index", 0));
  c.eoi_token_id = static_cast<int32_t>(f.integer("eoi_token_index", 0));
  const int64_t side = c.tokens_per_side(), patches = c.vision.patches_per_side();
  if (side * side != c.mm_tokens_per_image || patches % side != 0)
    f.fail("mm_tokens_per_image", std::to_string(c.mm_tokens_per_image) + " is not a square grid that pools the " +
                                      std::to_string(patches) + "x" + std::to_string(patches) +
                                      " patches evenly");
  return c;
}

}  // namespace ge::siglip
