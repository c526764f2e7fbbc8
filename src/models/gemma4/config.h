// Configuration of Gemma 4's text decoder (transformers' Gemma4TextConfig), resolved once from config.json
// into plain per-layer data: each layer's attention type, head width and KV heads, RoPE frequencies, MLP
// width, and whether its values are its raw keys. Gemma 4 shares Gemma 3n's per-layer inputs and KV sharing.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ge::gemma4 {

// transformers' default and proportional RoPE (modeling_rope_utils): pair j turns at theta^(-2j / head_dim) /
// factor for j < rotated_pairs; the pairs beyond stay unrotated (proportional RoPE on full layers).
struct Rope {
  double theta = 10000;
  double factor = 1;
  int64_t rotated_pairs = 0;
};

struct LayerConfig {
  bool sliding = false;
  int64_t head_dim = 0;           // global_head_dim on full layers (when set), head_dim on sliding ones
  int64_t num_kv_heads = 0;       // num_global_key_value_heads on K=V layers (when set)
  bool k_eq_v = false;            // attention_k_eq_v on a full layer: V is the raw k_proj output
  int64_t intermediate_size = 0;  // doubled on KV-shared layers with use_double_wide_mlp
  Rope rope;
};

// The layer's head_dim / 2 inverse frequencies, 0 for the pairs RoPE leaves alone.
std::vector<double> rope_inv_freq(const LayerConfig& layer);

struct Config {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  int64_t sliding_window = 0;
  std::optional<double> final_logit_softcapping;
  int64_t vocab_size_per_layer_input = 0;
  int64_t hidden_size_per_layer_input = 0;  // 0: no per-layer inputs
  int64_t num_kv_shared_layers = 0;
  // Mixture of experts beside the dense MLP of every layer (26B-A4B): num_experts experts of width
  // moe_intermediate_size, top_k_experts of them per token.
  bool enable_moe_block = false;
  int64_t num_experts = 0, top_k_experts = 0, moe_intermediate_size = 0;
  int32_t pad_token_id = 0;
  // model_type "gemma4": the image, video and audio placeholder ids, embedded as pad_token_id when typed as
  // text (Gemma4Model.forward).
  std::vector<int32_t> placeholder_ids;
  std::vector<LayerConfig> layers;

  int64_t first_kv_shared_layer() const { return num_layers - num_kv_shared_layers; }
  // The layer whose keys and values `layer` attends to: itself, or for a KV-shared layer the last layer of
  // its type before the shared ones.
  int64_t kv_source(int64_t layer) const;
};

// Whether config.json describes a Gemma 4 (model_type gemma4 or gemma4_text).
bool is_gemma4(const nlohmann::json& config);

// Accepts model_type "gemma4" (text_config nested) and "gemma4_text". Keys a config leaves out take the
// defaults of transformers' Gemma4TextConfig. `source` names the file in errors.
Config resolve_config(const nlohmann::json& config, const std::string& source);

}  // namespace ge::gemma4
