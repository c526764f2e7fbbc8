#include "models/gemma/config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "models/causal_lm.h"
#include "models/config_fields.h"
#include "tensor/dtype.h"

namespace ge::gemma {

namespace {

// Constructor defaults of transformers' GemmaConfig, Gemma2Config and Gemma3TextConfig.
const nlohmann::json& defaults(Family f) {
  static const nlohmann::json gemma = {
      {"vocab_size", 256000},      {"hidden_size", 3072},          {"intermediate_size", 24576},
      {"num_hidden_layers", 28},   {"num_attention_heads", 16},    {"num_key_value_heads", 16},
      {"head_dim", 256},           {"max_position_embeddings", 8192}, {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},     {"tie_word_embeddings", true},  {"rope_scaling", nullptr},
  };
  static const nlohmann::json gemma2 = {
      {"vocab_size", 256000},        {"hidden_size", 2304},         {"intermediate_size", 9216},
      {"num_hidden_layers", 26},     {"num_attention_heads", 8},    {"num_key_value_heads", 4},
      {"head_dim", 256},             {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", 8192}, {"rms_norm_eps", 1e-6},  {"rope_theta", 10000.0},
      {"query_pre_attn_scalar", 256}, {"sliding_window", 4096},   {"final_logit_softcapping", 30.0},
      {"attn_logit_softcapping", 50.0}, {"tie_word_embeddings", true}, {"rope_scaling", nullptr},
  };
  static const nlohmann::json gemma3 = {
      {"vocab_size", 262208},         {"hidden_size", 2304},          {"intermediate_size", 9216},
      {"num_hidden_layers", 26},      {"num_attention_heads", 8},     {"num_key_value_heads", 4},
      {"head_dim", 256},              {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", 131072}, {"rms_norm_eps", 1e-6},  {"rope_theta", 1000000.0},
      {"rope_local_base_freq", 10000.0}, {"query_pre_attn_scalar", 256}, {"sliding_window", 4096},
      {"final_logit_softcapping", nullptr}, {"rope_scaling", nullptr}, {"tie_word_embeddings", true},
      {"sliding_window_pattern", 6},
  };
  return f == Family::kGemma ? gemma : f == Family::kGemma2 ? gemma2 : gemma3;
}

using models::ConfigFields;

double linear_rope_factor(const ConfigFields& f) {
  const auto& s = f.get("rope_scaling");
  if (s.is_null()) return 1.0;
  if (!s.is_object()) f.fail("rope_scaling", "must be an object or null");
  std::string type = s.value("rope_type", s.value("type", std::string("default")));
  if (type == "default") return 1.0;
  if (type != "linear") f.fail("rope_scaling", "rope_type '" + type + "' is not supported (only linear)");
  if (!s.contains("factor") || !s["factor"].is_number() || s["factor"].get<double>() <= 0)
    f.fail("rope_scaling.factor", "must be a positive number");
  return s["factor"].get<double>();
}

// transformers: layer_types when given; else Gemma 2 slides on even layers and Gemma 3 makes every
// sliding_window_pattern-th layer global; Gemma 1 has no sliding layers.
std::vector<bool> sliding_layers(const ConfigFields& f, Family family, int64_t n_layers) {
  if (f.has("layer_types")) return models::sliding_from_layer_types(f, n_layers);
  std::vector<bool> sliding(n_layers, false);
  if (family == Family::kGemma) return sliding;
  const int64_t pattern = family == Family::kGemma2 ? 2
                          : f.given("_sliding_window_pattern") && !f.given("sliding_window_pattern")
                              ? f.integer("_sliding_window_pattern")
                              : f.integer("sliding_window_pattern");
  for (int64_t i = 0; i < n_layers; ++i) sliding[i] = (i + 1) % pattern != 0;
  return sliding;
}

// Every Gemma uses the tanh approximation of GELU: transformers maps an old config's `hidden_act: gelu`
// to gelu_pytorch_tanh too when hidden_activation is absent (GemmaMLP), so only hidden_activation counts.
void check_activation(const ConfigFields& f) {
  if (!f.has("hidden_activation")) return;
  const auto& act = f.get("hidden_activation");
  if (!act.is_string() || (act.get<std::string>() != "gelu_pytorch_tanh" && act.get<std::string>() != "gelu_tanh"))
    f.fail("hidden_activation", "only gelu_pytorch_tanh is supported");
}

Config resolve(const ConfigFields& f, Family family) {
  Config c;
  c.family = family;
  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.intermediate_size = f.integer("intermediate_size");
  c.num_layers = f.integer("num_hidden_layers", 1, models::kMaxLayers);
  c.num_heads = f.integer("num_attention_heads");
  c.num_kv_heads = f.integer("num_key_value_heads");
  c.head_dim = f.integer("head_dim");
  c.rms_norm_eps = f.number("rms_norm_eps");
  c.max_position_embeddings = f.integer("max_position_embeddings");
  if (c.num_heads % c.num_kv_heads != 0) f.fail("num_key_value_heads", "must divide num_attention_heads");
  if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even for RoPE");
  c.query_pre_attn_scalar = family == Family::kGemma ? static_cast<double>(c.head_dim)
                                                     : f.number("query_pre_attn_scalar");
  if (family != Family::kGemma) {
    c.sliding_window = f.integer("sliding_window");
    c.final_logit_softcapping = f.optional_number("final_logit_softcapping");
  }
  // Gemma 3's attention ignores attn_logit_softcapping (transformers' Gemma3Attention never applies it).
  if (family == Family::kGemma2) c.attn_logit_softcapping = f.optional_number("attn_logit_softcapping");
  c.tie_word_embeddings = f.boolean("tie_word_embeddings");
  check_activation(f);

  const double scale = linear_rope_factor(f);
  const double global_base = f.number("rope_theta");
  // Gemma 3's sliding layers use their own base and never the scaling (transformers' rotary_emb_local).
  const double local_base = family == Family::kGemma3 ? f.number("rope_local_base_freq") : global_base;
  const double local_scale = family == Family::kGemma3 ? 1.0 : scale;
  for (bool sliding : sliding_layers(f, family, c.num_layers))
    c.layers.push_back(sliding ? LayerConfig{true, local_base, local_scale} : LayerConfig{false, global_base, scale});
  return c;
}

Config resolve(const nlohmann::json& j, Family family, std::string source) {
  return resolve(ConfigFields(j, defaults(family), std::move(source)), family);
}

}  // namespace

float Config::attention_scale() const { return static_cast<float>(1.0 / std::sqrt(query_pre_attn_scalar)); }

float Config::embed_scale() const {
  return models::embedding_scale(hidden_size);
}

const char* Config::family_name() const {
  return family == Family::kGemma ? "gemma" : family == Family::kGemma2 ? "gemma2" : "gemma3";
}

Config resolve_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw std::runtime_error(source + ": not a JSON object");
  const std::string type = config.value("model_type", std::string());
  if (type == "gemma") return resolve(config, Family::kGemma, source);
  if (type == "gemma2") return resolve(config, Family::kGemma2, source);
  if (type == "gemma3_text") return resolve(config, Family::kGemma3, source);
  if (type == "gemma3") {
    static const nlohmann::json empty = nlohmann::json::object();
    const auto& text = config.contains("text_config") ? config["text_config"] : empty;
    if (!text.is_object()) throw std::runtime_error(source + ": text_config: not an object");
    Config c = resolve(text, Family::kGemma3, source + ": text_config");
    if (config.contains("vision_config")) {
      static const nlohmann::json defaults = {{"mm_tokens_per_image", 256}};  // Gemma3Config's
      c.image_block_tokens = models::ConfigFields(config, defaults, source).integer("mm_tokens_per_image");
    }
    return c;
  }
  throw std::runtime_error(source + ": model_type: '" + type +
                           "' is not supported (gemma, gemma2, gemma3_text, gemma3)");
}

}  // namespace ge::gemma
