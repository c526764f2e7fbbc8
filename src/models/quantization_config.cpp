#include "models/quantization_config.h"

#include <stdexcept>

namespace ge::models {

namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

int positive_int(const nlohmann::json& dict, const char* key, int fallback, const std::string& where) {
  if (!dict.contains(key) || dict[key].is_null()) return fallback;
  if (!dict[key].is_number_integer() || dict[key].get<int64_t>() <= 0)
    fail(where + ": " + key, "must be a positive integer");
  return dict[key].get<int>();
}

// A dict of quantization parameters, each missing key taking the mode's default.
kernels::QuantParams read_params(const nlohmann::json& dict, const std::string& where) {
  kernels::QuantMode mode = kernels::QuantMode::kAffine;
  if (dict.contains("mode") && !dict["mode"].is_null()) {
    const auto parsed = dict["mode"].is_string() ? kernels::parse_quant_mode(dict["mode"].get<std::string>())
                                                 : std::nullopt;
    if (!parsed) fail(where + ": mode", "unknown quantization mode " + dict["mode"].dump() +
                                            " (affine, nvfp4, mxfp4 or mxfp8)");
    mode = *parsed;
  }
  const kernels::QuantParams defaults = kernels::default_quant_params(mode);
  const kernels::QuantParams p{mode, positive_int(dict, "bits", defaults.bits, where),
                               positive_int(dict, "group_size", defaults.group_size, where)};
  if (const std::string error = kernels::quant_params_error(p); !error.empty()) fail(where, error);
  return p;
}

bool is_top_level_key(const std::string& key) {
  return key == "group_size" || key == "bits" || key == "mode";
}

}  // namespace

nn::QuantizationConfig read_quantization_config(const nlohmann::json& config, const std::string& source) {
  std::string key = "quantization";
  if (!config.contains(key)) {
    key = "quantization_config";
    if (!config.contains(key)) return {};
    const nlohmann::json& q = config[key];
    // transformers' quantization_config describes other formats (gptq, awq, bitsandbytes, ...).
    if (q.is_object() && q.contains("quant_method"))
      fail(source + ": " + key + ": quant_method",
           q["quant_method"].dump() + " checkpoints are not supported (MLX-quantized and GGUF files are)");
  }
  const nlohmann::json& q = config[key];
  const std::string where = source + ": " + key;
  if (!q.is_object()) fail(where, "must be an object");
  nn::QuantizationConfig out;
  out.defaults = read_params(q, where);
  for (const auto& [name, value] : q.items()) {
    if (is_top_level_key(name)) continue;
    if (value.is_boolean())
      out.per_layer[name] = value.get<bool>() ? out.defaults : std::nullopt;
    else if (value.is_object())
      out.per_layer[name] = read_params(value, where + ": " + name);
  }
  return out;
}

}  // namespace ge::models
