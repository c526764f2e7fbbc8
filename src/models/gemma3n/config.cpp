#include "models/gemma3n/config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "models/config_fields.h"

namespace ge::gemma3n {

namespace {

// Class defaults of transformers' Gemma3nTextConfig (the E4B shape); the list-valued ones
// (intermediate_size per layer, layer_types, activation_sparsity_pattern) are derived in resolve.
const nlohmann::json& defaults() {
  static const nlohmann::json d = {
      {"vocab_size", 262400},
      {"vocab_size_per_layer_input", 262144},
      {"hidden_size", 2048},
      {"hidden_size_per_layer_input", 256},
      {"intermediate_size", 16384},
      {"num_hidden_layers", 35},
      {"num_attention_heads", 8},
      {"num_key_value_heads", 2},
      {"head_dim", 256},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", 32768},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 1000000.0},
      {"rope_local_base_freq", 10000.0},
      {"rope_scaling", nullptr},
      {"rope_parameters", nullptr},
      {"sliding_window", 512},
      {"layer_types", nullptr},
      {"final_logit_softcapping", 30.0},
      {"altup_active_idx", 0},
      {"altup_coef_clip", 120.0},
      {"altup_correct_scale", true},
      {"altup_num_inputs", 4},
      {"num_kv_shared_layers", 15},
      {"laurel_rank", 64},
      {"activation_sparsity_pattern", nullptr},
  };
  return d;
}

using models::ConfigFields;

// A number or a list of one per layer (transformers repeats a single width).
std::vector<int64_t> intermediate_sizes(const ConfigFields& f, int64_t n_layers) {
  if (!f.get("intermediate_size").is_array())
    return std::vector<int64_t>(n_layers, f.integer("intermediate_size"));
  std::vector<int64_t> sizes;
  for (const auto& v : f.list("intermediate_size", n_layers)) {
    if (!v.is_number_integer() || v.get<int64_t>() <= 0)
      f.fail("intermediate_size", "entries must be positive integers");
    sizes.push_back(v.get<int64_t>());
  }
  return sizes;
}

// transformers: every fifth layer global when layer_types is absent.
std::vector<bool> sliding_layers(const ConfigFields& f, int64_t n_layers) {
  if (f.has("layer_types")) return models::sliding_from_layer_types(f, n_layers);
  std::vector<bool> sliding(n_layers);
  for (int64_t i = 0; i < n_layers; ++i) sliding[i] = (i + 1) % 5 != 0;
  return sliding;
}

// transformers: the first 10 layers at 0.95 (none when the model has 10 layers or fewer) when absent.
// A sparsity of 1 would zero every activation (its quantile is infinite): refused.
std::vector<double> activation_sparsity(const ConfigFields& f, int64_t n_layers) {
  std::vector<double> sparsity(n_layers, 0.0);
  if (f.get("activation_sparsity_pattern").is_null()) {
    if (n_layers > 10) std::fill(sparsity.begin(), sparsity.begin() + 10, 0.95);
    return sparsity;
  }
  const auto& pattern = f.list("activation_sparsity_pattern", n_layers);
  for (int64_t i = 0; i < n_layers; ++i) {
    if (!pattern[i].is_number() || pattern[i].get<double>() < 0 || pattern[i].get<double>() >= 1)
      f.fail("activation_sparsity_pattern", "entry " + std::to_string(i) + " must be a number in [0, 1)");
    sparsity[i] = pattern[i].get<double>();
  }
  return sparsity;
}

void check_default_rope(const ConfigFields& f, const std::string& key, const nlohmann::json& params) {
  if (params.is_null()) return;
  if (!params.is_object()) f.fail(key, "must be an object or null");
  const std::string type = params.value("rope_type", params.value("type", std::string("default")));
  if (type != "default") f.fail(key, "rope_type '" + type + "' is not supported (only default)");
}

// RoPE bases of global and sliding layers: rope_parameters' full_attention / sliding_attention (newer
// transformers), else rope_theta / rope_local_base_freq. Gemma 3n uses no RoPE scaling.
void resolve_rope(const ConfigFields& f, Config& c) {
  check_default_rope(f, "rope_scaling", f.get("rope_scaling"));
  c.rope_theta = f.number("rope_theta");
  c.rope_local_base_freq = f.number("rope_local_base_freq");
  const auto& params = f.get("rope_parameters");
  if (params.is_null()) return;
  if (!params.is_object()) f.fail("rope_parameters", "must be an object or null");
  for (const auto& [type, base] : {std::pair{"full_attention", &c.rope_theta},
                                   std::pair{"sliding_attention", &c.rope_local_base_freq}}) {
    if (!params.contains(type)) continue;
    const std::string key = std::string("rope_parameters.") + type;
    check_default_rope(f, key, params[type]);
    if (!params[type].contains("rope_theta")) continue;
    if (!params[type]["rope_theta"].is_number()) f.fail(key + ".rope_theta", "must be a number");
    *base = params[type]["rope_theta"].get<double>();
  }
}

Config resolve(const ConfigFields& f) {
  Config c;
  c.vocab_size = f.integer("vocab_size");
  c.vocab_size_per_layer_input = f.integer("vocab_size_per_layer_input");
  c.hidden_size = f.integer("hidden_size");
  c.hidden_size_per_layer_input = f.integer("hidden_size_per_layer_input");
  c.num_layers = f.integer("num_hidden_layers", 1, models::kMaxLayers);
  c.num_heads = f.integer("num_attention_heads");
  c.num_kv_heads = f.integer("num_key_value_heads");
  c.head_dim = f.integer("head_dim");
  c.rms_norm_eps = f.number("rms_norm_eps");
  c.max_position_embeddings = f.integer("max_position_embeddings");
  c.sliding_window = f.integer("sliding_window");
  c.final_logit_softcapping = f.optional_number("final_logit_softcapping");
  c.altup_num_inputs = f.integer("altup_num_inputs");
  c.altup_active_idx = f.integer("altup_active_idx", 0);
  c.altup_coef_clip = f.optional_number("altup_coef_clip");
  c.altup_correct_scale = f.boolean("altup_correct_scale");
  c.laurel_rank = f.integer("laurel_rank");
  c.num_kv_shared_layers = f.integer("num_kv_shared_layers", 0);
  resolve_rope(f, c);

  if (c.num_heads % c.num_kv_heads != 0) f.fail("num_key_value_heads", "must divide num_attention_heads");
  if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even for RoPE");
  if (c.vocab_size_per_layer_input > c.vocab_size)
    f.fail("vocab_size_per_layer_input", "must not exceed vocab_size");
  if (c.altup_num_inputs < 2) f.fail("altup_num_inputs", "must be at least 2");
  if (c.altup_active_idx >= c.altup_num_inputs) f.fail("altup_active_idx", "must be below altup_num_inputs");
  if (c.altup_coef_clip && *c.altup_coef_clip <= 0) f.fail("altup_coef_clip", "must be positive or null");
  if (c.num_kv_shared_layers >= c.num_layers)
    f.fail("num_kv_shared_layers", "must leave at least one layer computing its own keys and values");
  const auto& act = f.get("hidden_activation");
  if (!act.is_string() ||
      (act.get<std::string>() != "gelu_pytorch_tanh" && act.get<std::string>() != "gelu_tanh"))
    f.fail("hidden_activation", "only gelu_pytorch_tanh is supported");

  const std::vector<int64_t> widths = intermediate_sizes(f, c.num_layers);
  const std::vector<bool> sliding = sliding_layers(f, c.num_layers);
  const std::vector<double> sparsity = activation_sparsity(f, c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i)
    c.layers.push_back(
        // torch takes the quantile of the float32 sparsity (Normal(0, 1).icdf of a float32 tensor).
        {sliding[i], widths[i], sparsity[i], sparsity[i] > 0 ? normal_quantile(static_cast<float>(sparsity[i])) : 0.0});
  return c;
}

// Acklam's rational approximation of the normal quantile: one rational function in the centre, one in
// sqrt(-2 log p) for the tails.
double acklam_quantile(double p) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01, -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  constexpr double p_low = 0.02425;
  const auto tail = [&](double q) {
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  };
  if (p < p_low) return tail(std::sqrt(-2 * std::log(p)));
  if (p > 1 - p_low) return -tail(std::sqrt(-2 * std::log1p(-p)));
  const double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

MultimodalIds multimodal_ids(const nlohmann::json& config, const char* key, int64_t default_offset,
                             const std::string& source) {
  static const nlohmann::json none = nlohmann::json::object();
  const nlohmann::json& sub = config.contains(key) && config[key].is_object() ? config[key] : none;
  static const nlohmann::json tower_defaults = {{"vocab_size", 128}, {"rms_norm_eps", 1e-6}};
  nlohmann::json d = tower_defaults;
  d["vocab_offset"] = default_offset;
  const ConfigFields f(sub, d, source + ": " + key);
  return {f.integer("vocab_offset", 0), f.integer("vocab_size", 0), f.number("rms_norm_eps")};
}

}  // namespace

int64_t Config::kv_source(int64_t layer) const {
  const int64_t first = first_kv_shared_layer();
  if (layer < first || first == 0) return layer;
  for (int64_t i = first - 1; i >= 0; --i)
    if (layers[i].sliding == layers[layer].sliding) return i;
  throw std::runtime_error("Gemma 3n: KV-shared layer " + std::to_string(layer) +
                           " has no earlier layer of its type to read keys and values from");
}

double normal_quantile(double p) {
  if (!(p > 0 && p < 1)) {
    if (p == 0) return -std::numeric_limits<double>::infinity();
    if (p == 1) return std::numeric_limits<double>::infinity();
    return std::numeric_limits<double>::quiet_NaN();
  }
  const double x = acklam_quantile(p);
  // Halley's step on Phi(x) - p, with Phi(x) = erfc(-x / sqrt 2) / 2. Above the median the residual is
  // taken as (1 - p) - (1 - Phi(x)): 1 - p is exact there, and Phi(x) near 1 would lose the tail's digits.
  const double e =
      p < 0.5 ? 0.5 * std::erfc(-x / std::sqrt(2.0)) - p : (1 - p) - 0.5 * std::erfc(x / std::sqrt(2.0));
  const double u = e * std::sqrt(2 * std::numbers::pi) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

bool is_gemma3n(const nlohmann::json& config) {
  const std::string type = config.is_object() ? config.value("model_type", std::string()) : std::string();
  return type == "gemma3n" || type == "gemma3n_text";
}

Config resolve_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw std::runtime_error(source + ": not a JSON object");
  const std::string type = config.value("model_type", std::string());
  if (type == "gemma3n_text") return resolve(ConfigFields(config, defaults(), source));
  if (type == "gemma3n") {
    if (!config.contains("text_config") || !config["text_config"].is_object())
      throw std::runtime_error(source + ": text_config: missing or not an object");
    Config c = resolve(ConfigFields(config["text_config"], defaults(), source + ": text_config"));
    // Gemma3nVisionConfig / Gemma3nAudioConfig defaults: 128 ids each after the text vocabulary.
    c.vision = multimodal_ids(config, "vision_config", 262144, source);
    c.audio = multimodal_ids(config, "audio_config", 262272, source);
    return c;
  }
  throw std::runtime_error(source + ": model_type: '" + type + "' is not a Gemma 3n (gemma3n, gemma3n_text)");
}

}  // namespace ge::gemma3n
