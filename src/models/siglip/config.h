// Configuration of the SigLIP vision tower (transformers' SiglipVisionConfig) and of the Gemma 3 projector
// that pools its patches into soft tokens for the text model (Gemma3Config's multimodal keys).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace ge::siglip {

struct VisionConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_channels = 0;
  int64_t image_size = 0;
  int64_t patch_size = 0;
  double layer_norm_eps = 0;

  int64_t patches_per_side() const { return image_size / patch_size; }
  int64_t num_patches() const { return patches_per_side() * patches_per_side(); }
  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t patch_values() const { return num_channels * patch_size * patch_size; }
};

// Gemma3ForConditionalGeneration around the tower: how many soft tokens an image becomes and which ids
// mark them in a prompt.
struct Gemma3VisionConfig {
  VisionConfig vision;
  int64_t mm_tokens_per_image = 0;
  int64_t text_hidden_size = 0;
  int32_t image_token_id = 0;  // <image_soft_token>
  int32_t boi_token_id = 0;    // <start_of_image>
  int32_t eoi_token_id = 0;    // <end_of_image>

  int64_t tokens_per_side() const;  // sqrt(mm_tokens_per_image)
  int64_t pooling() const { return vision.patches_per_side() / tokens_per_side(); }
};

// `vision_config` with SiglipVisionConfig's constructor defaults for the keys it leaves out; `where` names
// the file in errors.
VisionConfig resolve_vision_config(const nlohmann::json& vision_config, const std::string& where);

// A gemma3 config.json (Gemma3Config): its vision_config, mm_tokens_per_image and token ids, with
// Gemma3Config's defaults. Fails naming the key when the config has no vision tower or the soft tokens do
// not pool the patch grid evenly.
Gemma3VisionConfig resolve_gemma3_vision_config(const nlohmann::json& config, int64_t text_hidden_size,
                                                const std::string& where);

// Whether a config.json describes a model with a vision tower.
bool has_vision_config(const nlohmann::json& config);
// Whether a checkpoint tensor belongs to the tower or the projector (under any of the prefixes
// transformers versions save them with).
bool is_vision_tensor(std::string_view name);

}  // namespace ge::siglip
