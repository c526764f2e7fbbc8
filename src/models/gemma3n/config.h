// Configuration of Gemma 3n's text decoder, resolved once from config.json into plain per-layer data.
// Beyond a Gemma 3 decoder, 3n carries AltUp (altup_num_inputs parallel copies of the hidden state, one
// of them "active"), LAuReL (a low-rank residual branch), per-layer input embeddings, layers that reuse
// an earlier layer's keys and values, a per-layer MLP width and activation sparsity in the first layers.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ge::gemma3n {

struct LayerConfig {
  bool sliding = false;            // sliding-window attention (else global)
  int64_t intermediate_size = 0;   // MLP width of this layer
  double activation_sparsity = 0;  // target fraction of MLP gate activations zeroed (0: dense)
  // The gate's cutoff is mean + sparsity_std_multiplier * stddev: the standard normal quantile of
  // activation_sparsity, 0 for a dense layer (where the quantile would be -infinity).
  double sparsity_std_multiplier = 0;
};

// Gemma3nForConditionalGeneration's embedder of one modality's ids typed as text (embed_vision,
// embed_audio): ids [vocab_offset, vocab_offset + vocab_size) take its rows.
struct MultimodalIds {
  int64_t vocab_offset = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
};

struct Config {
  int64_t vocab_size = 0;                  // rows of the token embedding (text, image and audio ids)
  int64_t vocab_size_per_layer_input = 0;  // rows of the per-layer embedding (text ids only)
  int64_t hidden_size = 0;
  int64_t hidden_size_per_layer_input = 0;  // width of one layer's slice of the per-layer embedding
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  int64_t sliding_window = 0;
  double rope_theta = 0;            // global layers
  double rope_local_base_freq = 0;  // sliding layers
  std::optional<double> final_logit_softcapping;
  int64_t altup_num_inputs = 0;
  int64_t altup_active_idx = 0;
  std::optional<double> altup_coef_clip;  // |correction coefficient| bound; none when null
  bool altup_correct_scale = true;        // scale the corrected active copy by correct_output_scale
  int64_t laurel_rank = 0;
  int64_t num_kv_shared_layers = 0;  // the last layers, which reuse keys and values of earlier ones
  std::vector<LayerConfig> layers;
  // model_type "gemma3n" only (its vision_config / audio_config); a text-only config has neither.
  std::optional<MultimodalIds> vision, audio;

  int64_t first_kv_shared_layer() const { return num_layers - num_kv_shared_layers; }
  // The layer whose keys and values layer `layer` attends to: itself, or for a KV-shared layer the last
  // layer of the same type before the shared ones (transformers' Gemma3nTextAttention).
  int64_t kv_source(int64_t layer) const;
};

// The standard normal quantile (probit) of p in (0, 1): Acklam's rational approximation (relative
// error below 1.2e-9) refined by one Halley step on std::erfc, which brings it to about 1e-15.
double normal_quantile(double p);

// Whether config.json describes a Gemma 3n (model_type gemma3n or gemma3n_text).
bool is_gemma3n(const nlohmann::json& config);

// Accepts model_type "gemma3n" (the text model in text_config) and "gemma3n_text". Keys a config leaves
// out take the defaults of transformers' Gemma3nTextConfig. `source` names the file in errors.
Config resolve_config(const nlohmann::json& config, const std::string& source);

}  // namespace ge::gemma3n
