#include "models/config_fields.h"

#include <stdexcept>

namespace ge::models {

ConfigFields::ConfigFields(const nlohmann::json& given, const nlohmann::json& defaults, std::string source)
    : given_(given), defaults_(defaults), source_(std::move(source)) {}

const nlohmann::json& ConfigFields::get(const std::string& key) const {
  if (given_.contains(key)) return given_[key];
  if (defaults_.contains(key)) return defaults_[key];
  fail(key, "missing");
}

int64_t ConfigFields::integer(const std::string& key, int64_t min, int64_t max) const {
  const auto& v = get(key);
  if (!v.is_number_integer() || v.get<int64_t>() < min)
    fail(key, min == 0 ? "must be a non-negative integer" : "must be a positive integer");
  // An unsigned value past INT64_MAX reads back negative and fails above; this bound is the file's claim itself.
  if (v.get<int64_t>() > max)
    fail(key, std::to_string(v.get<int64_t>()) + " is more than the " + std::to_string(max) + " this engine takes");
  return v.get<int64_t>();
}

double ConfigFields::number(const std::string& key) const {
  const auto& v = get(key);
  if (!v.is_number()) fail(key, "must be a number");
  return v.get<double>();
}

std::optional<double> ConfigFields::optional_number(const std::string& key) const {
  if (get_or_null(key).is_null()) return std::nullopt;
  return number(key);
}

bool ConfigFields::boolean(const std::string& key) const {
  const auto& v = get(key);
  if (!v.is_boolean()) fail(key, "must be true or false");
  return v.get<bool>();
}

const nlohmann::json& ConfigFields::list(const std::string& key, int64_t n) const {
  const auto& v = get(key);
  if (!v.is_array() || static_cast<int64_t>(v.size()) != n)
    fail(key, "must list num_hidden_layers (" + std::to_string(n) + ") entries, one per layer");
  return v;
}

bool ConfigFields::has(const std::string& key) const {
  return !get_or_null(key).is_null();
}

bool ConfigFields::given(const std::string& key) const {
  return given_.contains(key) && !given_[key].is_null();
}

void ConfigFields::fail(const std::string& key, const std::string& what) const {
  throw std::runtime_error(source_ + ": " + key + ": " + what);
}

const nlohmann::json& ConfigFields::get_or_null(const std::string& key) const {
  static const nlohmann::json null;
  if (given_.contains(key)) return given_[key];
  return defaults_.contains(key) ? defaults_[key] : null;
}

std::vector<bool> sliding_from_layer_types(const ConfigFields& f, int64_t n_layers) {
  const auto& types = f.list("layer_types", n_layers);
  std::vector<bool> sliding(n_layers);
  for (int64_t i = 0; i < n_layers; ++i) {
    const std::string t = types[i].is_string() ? types[i].get<std::string>() : "";
    if (t != "sliding_attention" && t != "full_attention")
      f.fail("layer_types",
             "entry " + std::to_string(i) + " is neither sliding_attention nor full_attention");
    sliding[i] = t == "sliding_attention";
  }
  return sliding;
}

}  // namespace ge::models
