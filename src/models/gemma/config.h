// Gemma 3 text decoder configuration, resolved once from config.json into plain per-layer data.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ge::gemma3 {

struct LayerConfig {
  bool sliding = false;      // sliding-window attention (else global)
  double rope_base = 0;      // RoPE theta of this layer
  double rope_scale = 1;     // linear position scaling: positions are divided by this
};

struct Config {
  int64_t vocab_size = 0;    // rows of the embedding table (may exceed the tokenizer)
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double query_pre_attn_scalar = 0;  // attention scale = query_pre_attn_scalar^-0.5
  std::optional<double> final_logit_softcapping;
  int64_t sliding_window = 0;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = true;
  std::vector<LayerConfig> layers;

  float attention_scale() const;
  float embed_scale() const;  // sqrt(hidden_size) rounded to bf16, as transformers does
};

// Accepts model_type "gemma3_text" and "gemma3" (text_config nested; keys missing from it take the
// transformers defaults of Gemma3TextConfig). `source` names the file in error messages.
Config resolve_config(const nlohmann::json& config, const std::string& source);

}  // namespace ge::gemma3
