#include "models/gemma4/config.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "models/config_fields.h"
#include "nn/attention.h"

namespace ge::gemma4 {

namespace {

using models::ConfigFields;

// Class defaults of transformers' Gemma4TextConfig.
const nlohmann::json& defaults() {
  static const nlohmann::json d = {
      {"vocab_size", 262144},
      {"hidden_size", 2304},
      {"intermediate_size", 9216},
      {"num_hidden_layers", 30},
      {"num_attention_heads", 8},
      {"num_key_value_heads", 4},
      {"head_dim", 256},
      {"global_head_dim", 512},
      {"num_global_key_value_heads", nullptr},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", 131072},
      {"rms_norm_eps", 1e-6},
      {"pad_token_id", 0},
      {"rope_parameters", nullptr},
      {"sliding_window", 512},
      {"layer_types", nullptr},
      {"final_logit_softcapping", nullptr},
      {"use_bidirectional_attention", nullptr},
      {"vocab_size_per_layer_input", 262144},
      {"hidden_size_per_layer_input", 256},
      {"attention_k_eq_v", false},
      {"num_kv_shared_layers", 0},
      {"enable_moe_block", false},
      {"num_experts", nullptr},
      {"top_k_experts", nullptr},
      {"moe_intermediate_size", nullptr},
      {"use_double_wide_mlp", false},
  };
  return d;
}

// rope_parameters' default (Gemma4TextConfig): default RoPE on sliding layers, proportional on full ones.
const nlohmann::json& default_rope() {
  static const nlohmann::json d = {
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
      {"full_attention", {{"rope_type", "proportional"}, {"partial_rotary_factor", 0.25}, {"rope_theta", 1e6}}}};
  return d;
}

// A layer type's rope_parameters: the proportional kind rotates the first int(partial_rotary_factor * head_dim / 2)
// pairs, with exponents over the whole head.
Rope read_rope(const ConfigFields& f, const nlohmann::json& p, const std::string& key, int64_t head_dim) {
  if (!p.is_object()) f.fail(key, "must be an object");
  const std::string type = p.value("rope_type", std::string("default"));
  if (!p.contains("rope_theta") || !p["rope_theta"].is_number()) f.fail(key + ".rope_theta", "must be a number");
  Rope rope{p["rope_theta"].get<double>(), 1.0, head_dim / 2};
  if (type == "default") return rope;
  if (type != "proportional") f.fail(key, "rope_type '" + type + "' is not supported (default, proportional)");
  rope.factor = p.value("factor", 1.0);
  rope.rotated_pairs = static_cast<int64_t>(p.value("partial_rotary_factor", 1.0) * static_cast<double>(head_dim) / 2);
  return rope;
}

Config resolve(const ConfigFields& f) {
  Config c;
  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.num_layers = f.integer("num_hidden_layers", 1, models::kMaxLayers);
  c.num_heads = f.integer("num_attention_heads");
  c.rms_norm_eps = f.number("rms_norm_eps");
  c.max_position_embeddings = f.integer("max_position_embeddings");
  c.sliding_window = f.integer("sliding_window");
  c.final_logit_softcapping = f.optional_number("final_logit_softcapping");
  c.vocab_size_per_layer_input = f.integer("vocab_size_per_layer_input");
  c.hidden_size_per_layer_input = f.integer("hidden_size_per_layer_input", 0);
  c.num_kv_shared_layers = f.integer("num_kv_shared_layers", 0);
  c.enable_moe_block = f.boolean("enable_moe_block");
  if (c.enable_moe_block) {
    c.num_experts = f.integer("num_experts");
    c.top_k_experts = f.integer("top_k_experts");
    if (c.top_k_experts > c.num_experts) f.fail("top_k_experts", "must not exceed num_experts");
    // Some exports name the expert width expert_intermediate_size (llama.cpp reads both).
    c.moe_intermediate_size =
        f.has("moe_intermediate_size") || !f.has("expert_intermediate_size") ? f.integer("moe_intermediate_size")
                                                                              : f.integer("expert_intermediate_size");
  }
  c.pad_token_id = static_cast<int32_t>(f.integer("pad_token_id", 0));
  const auto& act = f.get("hidden_activation");
  if (!act.is_string() || (act.get<std::string>() != "gelu_pytorch_tanh" && act.get<std::string>() != "gelu_tanh"))
    f.fail("hidden_activation", "only gelu_pytorch_tanh is supported");
  if (f.has("use_bidirectional_attention") && f.get("use_bidirectional_attention") == "all")
    f.fail("use_bidirectional_attention", "\"all\" (bidirectional text attention) is not supported");
  if (c.num_kv_shared_layers >= c.num_layers)
    f.fail("num_kv_shared_layers", "must leave at least one layer computing its own keys and values");

  // transformers: every sixth layer global when layer_types is absent; the last layer is global always.
  std::vector<bool> sliding(c.num_layers);
  if (f.has("layer_types"))
    sliding = models::sliding_from_layer_types(f, c.num_layers);
  else
    for (int64_t i = 0; i < c.num_layers; ++i) sliding[i] = (i + 1) % 6 != 0;
  sliding.back() = false;

  const int64_t head_dim = f.integer("head_dim"), kv_heads = f.integer("num_key_value_heads");
  if (c.num_heads % kv_heads != 0) f.fail("num_key_value_heads", "must divide num_attention_heads");
  const int64_t global_head_dim = f.has("global_head_dim") ? f.integer("global_head_dim") : head_dim;
  const bool k_eq_v = f.boolean("attention_k_eq_v");
  const int64_t global_kv_heads =
      f.has("num_global_key_value_heads") ? f.integer("num_global_key_value_heads") : kv_heads;
  if (c.num_heads % global_kv_heads != 0) f.fail("num_global_key_value_heads", "must divide num_attention_heads");
  const int64_t inter = f.integer("intermediate_size");
  const bool double_wide = f.boolean("use_double_wide_mlp");
  const nlohmann::json& rope = f.has("rope_parameters") ? f.get("rope_parameters") : default_rope();
  if (!rope.is_object()) f.fail("rope_parameters", "must be an object or null");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerConfig l;
    l.sliding = sliding[i];
    l.head_dim = l.sliding ? head_dim : global_head_dim;
    l.k_eq_v = k_eq_v && !l.sliding;
    l.num_kv_heads = l.k_eq_v ? global_kv_heads : kv_heads;
    l.intermediate_size = double_wide && i >= c.first_kv_shared_layer() && c.num_kv_shared_layers > 0 ? 2 * inter : inter;
    const char* type = l.sliding ? "sliding_attention" : "full_attention";
    if (!rope.contains(type)) f.fail(std::string("rope_parameters.") + type, "is missing");
    if (l.head_dim % 2 != 0) f.fail(l.sliding ? "head_dim" : "global_head_dim", "must be even for RoPE");
    l.rope = read_rope(f, rope[type], std::string("rope_parameters.") + type, l.head_dim);
    c.layers.push_back(std::move(l));
  }
  return c;
}

}  // namespace

std::vector<double> rope_inv_freq(const LayerConfig& layer) {
  std::vector<double> inv = nn::RopeTables::default_inv_freq(layer.rope.theta, layer.rope.factor, layer.head_dim);
  for (size_t j = static_cast<size_t>(layer.rope.rotated_pairs); j < inv.size(); ++j) inv[j] = 0;
  return inv;
}

int64_t Config::kv_source(int64_t layer) const {
  const int64_t first = first_kv_shared_layer();
  if (layer < first) return layer;
  for (int64_t i = first - 1; i >= 0; --i)
    if (layers[i].sliding == layers[layer].sliding) return i;
  throw std::runtime_error("Gemma 4: KV-shared layer " + std::to_string(layer) +
                           " has no earlier layer of its type to read keys and values from");
}

bool is_gemma4(const nlohmann::json& config) {
  const std::string type = config.is_object() ? config.value("model_type", std::string()) : std::string();
  return type == "gemma4" || type == "gemma4_text";
}

Config resolve_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw std::runtime_error(source + ": not a JSON object");
  const std::string type = config.value("model_type", std::string());
  if (type == "gemma4_text") return resolve(ConfigFields(config, defaults(), source));
  if (type != "gemma4")
    throw std::runtime_error(source + ": model_type: '" + type + "' is not a Gemma 4 (gemma4, gemma4_text)");
  if (!config.contains("text_config") || !config["text_config"].is_object())
    throw std::runtime_error(source + ": text_config: missing or not an object");
  Config c = resolve(ConfigFields(config["text_config"], defaults(), source + ": text_config"));
  // Gemma4Config's placeholder ids.
  for (const auto& [key, fallback] : {std::pair{"image_token_id", 258880}, std::pair{"video_token_id", 258884},
                                      std::pair{"audio_token_id", 258881}}) {
    const auto it = config.find(key);
    if (it == config.end()) {
      c.placeholder_ids.push_back(fallback);
    } else if (it->is_number_integer()) {
      c.placeholder_ids.push_back(it->get<int32_t>());
    } else if (!it->is_null()) {
      throw std::runtime_error(source + ": " + key + ": must be an integer or null");
    }
  }
  return c;
}

}  // namespace ge::gemma4
