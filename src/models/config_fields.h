// A config.json object read key by key over a table of transformers' constructor defaults, so that a
// sparse config (Hugging Face omits what equals the default) resolves like a full one. Every failure
// names the source and the key: "config.json: text_config: head_dim: must be a positive integer".
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "models/limits.h"

namespace ge::models {

class ConfigFields {
 public:
  // `given` and `defaults` must outlive this object: temporaries are refused at compile time.
  ConfigFields(const nlohmann::json& given, const nlohmann::json& defaults, std::string source);
  ConfigFields(nlohmann::json&& given, const nlohmann::json& defaults, std::string source) = delete;
  ConfigFields(const nlohmann::json& given, nlohmann::json&& defaults, std::string source) = delete;

  // The given value, else the default; fails when there is neither.
  const nlohmann::json& get(const std::string& key) const;
  // At least `min` (1 for sizes and counts, 0 for indices) and at most `max` (models/limits.h).
  int64_t integer(const std::string& key, int64_t min = 1, int64_t max = kMaxConfigValue) const;
  double number(const std::string& key) const;
  // nullopt when the value (given or default) is null or absent.
  std::optional<double> optional_number(const std::string& key) const;
  bool boolean(const std::string& key) const;
  // A list of exactly n entries, one per layer.
  const nlohmann::json& list(const std::string& key, int64_t n) const;
  bool has(const std::string& key) const;    // given or defaulted, and not null
  bool given(const std::string& key) const;  // given, and not null
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

 private:
  const nlohmann::json& get_or_null(const std::string& key) const;

  const nlohmann::json& given_;
  const nlohmann::json& defaults_;
  std::string source_;
};

// Which of n_layers layers slide, from the "layer_types" list (sliding_attention / full_attention).
std::vector<bool> sliding_from_layer_types(const ConfigFields& f, int64_t n_layers);

}  // namespace ge::models
