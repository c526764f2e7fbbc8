#include "models/gemma3/config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tensor/dtype.h"

namespace ge::gemma3 {

namespace {

// Gemma3TextConfig's constructor defaults (transformers, configuration_gemma3.py): a sparse text_config, as
// in the published gemma-3-4b-it, relies on them.
const nlohmann::json& text_defaults() {
  static const nlohmann::json d = {
      {"vocab_size", 262208},
      {"hidden_size", 2304},
      {"intermediate_size", 9216},
      {"num_hidden_layers", 26},
      {"num_attention_heads", 8},
      {"num_key_value_heads", 4},
      {"head_dim", 256},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"max_position_embeddings", 131072},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 1000000.0},
      {"rope_local_base_freq", 10000.0},
      {"query_pre_attn_scalar", 256},
      {"sliding_window", 4096},
      {"final_logit_softcapping", nullptr},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", true},
      {"sliding_window_pattern", 6},
  };
  return d;
}

class Fields {
 public:
  Fields(const nlohmann::json& j, std::string source) : j_(j), source_(std::move(source)) {}

  const nlohmann::json& get(const std::string& key) const {
    if (j_.contains(key)) return j_[key];
    if (text_defaults().contains(key)) return text_defaults()[key];
    fail(key, "missing");
  }
  int64_t integer(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0) fail(key, "must be a positive integer");
    return v.get<int64_t>();
  }
  double number(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_number()) fail(key, "must be a number");
    return v.get<double>();
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error(source_ + ": " + key + ": " + what);
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }

 private:
  const nlohmann::json& j_;
  std::string source_;
};

double linear_rope_factor(const Fields& f) {
  const auto& s = f.get("rope_scaling");
  if (s.is_null()) return 1.0;
  std::string type = s.value("rope_type", s.value("type", std::string("default")));
  if (type == "default") return 1.0;
  if (type != "linear") f.fail("rope_scaling", "rope_type '" + type + "' is not supported (only linear)");
  if (!s.contains("factor") || !s["factor"].is_number() || s["factor"].get<double>() <= 0)
    f.fail("rope_scaling.factor", "must be a positive number");
  return s["factor"].get<double>();
}

std::vector<bool> sliding_layers(const Fields& f, int64_t n_layers) {
  std::vector<bool> sliding(n_layers);
  if (f.has("layer_types")) {
    const auto& types = f.get("layer_types");
    if (!types.is_array() || static_cast<int64_t>(types.size()) != n_layers)
      f.fail("layer_types", "must list num_hidden_layers entries");
    for (int64_t i = 0; i < n_layers; ++i) {
      const std::string t = types[i].is_string() ? types[i].get<std::string>() : "";
      if (t != "sliding_attention" && t != "full_attention")
        f.fail("layer_types", "entry " + std::to_string(i) + " is neither sliding_attention nor full_attention");
      sliding[i] = t == "sliding_attention";
    }
    return sliding;
  }
  const std::string key = f.has("sliding_window_pattern") ? "sliding_window_pattern"
                          : f.has("_sliding_window_pattern") ? "_sliding_window_pattern"
                                                              : "sliding_window_pattern";
  const int64_t pattern = f.integer(key);
  for (int64_t i = 0; i < n_layers; ++i) sliding[i] = (i + 1) % pattern != 0;
  return sliding;
}

Config resolve_text(const Fields& f) {
  Config c;
  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.intermediate_size = f.integer("intermediate_size");
  c.num_layers = f.integer("num_hidden_layers");
  c.num_heads = f.integer("num_attention_heads");
  c.num_kv_heads = f.integer("num_key_value_heads");
  c.head_dim = f.integer("head_dim");
  c.rms_norm_eps = f.number("rms_norm_eps");
  c.query_pre_attn_scalar = f.number("query_pre_attn_scalar");
  c.sliding_window = f.integer("sliding_window");
  c.max_position_embeddings = f.integer("max_position_embeddings");
  if (c.num_heads % c.num_kv_heads != 0) f.fail("num_key_value_heads", "must divide num_attention_heads");
  if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even for RoPE");
  if (f.has("final_logit_softcapping")) c.final_logit_softcapping = f.number("final_logit_softcapping");
  const auto& tie = f.get("tie_word_embeddings");
  if (!tie.is_boolean()) f.fail("tie_word_embeddings", "must be true or false");
  c.tie_word_embeddings = tie.get<bool>();
  const auto& act = f.get("hidden_activation");
  if (!act.is_string() || (act.get<std::string>() != "gelu_pytorch_tanh" && act.get<std::string>() != "gelu_tanh"))
    f.fail("hidden_activation", "only gelu_pytorch_tanh is supported");

  const double global_scale = linear_rope_factor(f);
  const double global_base = f.number("rope_theta");
  const double local_base = f.number("rope_local_base_freq");
  for (bool sliding : sliding_layers(f, c.num_layers)) {
    // Sliding layers use the local base and never the scaling (transformers' rotary_emb_local).
    c.layers.push_back(sliding ? LayerConfig{true, local_base, 1.0} : LayerConfig{false, global_base, global_scale});
  }
  return c;
}

}  // namespace

float Config::attention_scale() const { return static_cast<float>(1.0 / std::sqrt(query_pre_attn_scalar)); }

float Config::embed_scale() const {
  return bf16_to_f32(f32_to_bf16(static_cast<float>(std::sqrt(static_cast<double>(hidden_size)))));
}

Config resolve_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw std::runtime_error(source + ": not a JSON object");
  const std::string type = config.value("model_type", std::string());
  if (type == "gemma3_text") return resolve_text(Fields(config, source));
  if (type == "gemma3") {
    static const nlohmann::json empty = nlohmann::json::object();
    const auto& text = config.contains("text_config") ? config["text_config"] : empty;
    if (!text.is_object()) throw std::runtime_error(source + ": text_config: not an object");
    return resolve_text(Fields(text, source + ": text_config"));
  }
  throw std::runtime_error(source + ": model_type: '" + type + "' is not a Gemma 3 model");
}

}  // namespace ge::gemma3
