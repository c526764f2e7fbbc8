// Configuration of the Gemma decoder family (Gemma 1, Gemma 2, Gemma 3 text), resolved once from
// config.json into plain per-layer data. One decoder serves the three: they differ only in which norms
// exist, how layers alternate between sliding and global attention, RoPE per layer and soft-capping,
// all of which is data here.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ge::gemma {

enum class Family { kGemma, kGemma2, kGemma3 };

struct LayerConfig {
  bool sliding = false;   // sliding-window attention (else global)
  double rope_base = 0;   // RoPE theta of this layer
  double rope_scale = 1;  // linear position scaling: positions are divided by this
};

struct Config {
  Family family = Family::kGemma3;
  int64_t vocab_size = 0;  // rows of the embedding table (may exceed the tokenizer)
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double query_pre_attn_scalar = 0;  // attention scale = query_pre_attn_scalar^-0.5 (head_dim for Gemma 1)
  std::optional<double> attn_logit_softcapping;   // Gemma 2: tanh cap on attention scores
  std::optional<double> final_logit_softcapping;  // Gemma 2 and 3: tanh cap on logits
  int64_t sliding_window = 0;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = true;
  // Gemma's RMSNorm scales by 1 + w as the checkpoints store w; GGUF files store w + 1 (what other runtimes
  // multiply by), so a model loaded from one scales by the stored weight as is.
  bool norm_adds_one = true;
  std::vector<LayerConfig> layers;
  // Gemma 3 with a vision tower: the soft tokens of one image (mm_tokens_per_image) attend to each other
  // both ways, so a forward step must hold a whole image; 0 for text-only models.
  int64_t image_block_tokens = 0;

  // Gemma 3 normalizes queries and keys per head.
  bool qk_norm() const { return family == Family::kGemma3; }
  // Gemma 2 and 3 norm the attention and MLP outputs too (Gemma 1 only their inputs).
  bool sandwich_norms() const { return family != Family::kGemma; }
  float attention_scale() const;
  float embed_scale() const;  // sqrt(hidden_size) rounded to bf16, as transformers does
  const char* family_name() const;
};

// Accepts model_type "gemma", "gemma2", "gemma3_text" and "gemma3" (text_config nested). Keys a config
// leaves out take the transformers defaults of GemmaConfig / Gemma2Config / Gemma3TextConfig (a sparse
// text_config, as in the published gemma-3-4b-it, relies on them). `source` names the file in errors.
Config resolve_config(const nlohmann::json& config, const std::string& source);

}  // namespace ge::gemma
