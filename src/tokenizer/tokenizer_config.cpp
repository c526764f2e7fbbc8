// tokenizer_config.json (transformers' tokenizer settings) and the special-token resolution it feeds.
#include <charconv>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/json_file.h"
#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer_model.h"

namespace ge::tokenizer_detail {
namespace {

// tokenizer_config.json is small and read with nlohmann::json rather than simdjson: Gemma 1/2's files
// carry "model_max_length": 1000000000000000019884624838656, an integer simdjson 3.0 rejects.
class ConfigJson {
 public:
  explicit ConfigJson(const std::filesystem::path& file) : name_(file.string()), root_(formats::read_json_file(file)) {
    if (!root_.is_object()) fail("(root)", "expected an object");
  }
  [[noreturn]] void fail(std::string_view field, std::string_view what) const {
    throw std::runtime_error(name_ + ": " + std::string(field) + ": " + std::string(what));
  }
  const std::string& name() const { return name_; }
  const nlohmann::json& root() const { return root_; }

  bool bool_or(const nlohmann::json& object, const std::string& key, std::string_view field, bool fallback) const {
    if (!object.contains(key) || object[key].is_null()) return fallback;
    if (!object[key].is_boolean()) fail(field, "expected true or false");
    return object[key].get<bool>();
  }
  std::string string_member(const nlohmann::json& object, const std::string& key, std::string_view field) const {
    if (!object.contains(key) || !object[key].is_string()) fail(field, "expected a string");
    return object[key].get<std::string>();
  }

 private:
  std::string name_;
  nlohmann::json root_;
};

// transformers writes special tokens either as a plain string or as a serialized AddedToken object.
std::optional<std::string> read_token_name(const ConfigJson& json, const std::string& key) {
  const auto& root = json.root();
  if (!root.contains(key) || root[key].is_null()) return std::nullopt;
  const auto& e = root[key];
  if (e.is_string()) return e.get<std::string>();
  if (!e.is_object()) json.fail(key, "expected a string or an object");
  return json.string_member(e, "content", join_field(key, "content"));
}

int32_t parse_token_id(const ConfigJson& json, std::string_view key, std::string_view field) {
  int64_t id = -1;
  const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
  if (error != std::errc() || end != key.data() + key.size() || id < 0 || id > kMaxTokenId)
    json.fail(field, "expected a token id as the key");
  return static_cast<int32_t>(id);
}

std::vector<TokenizerConfig::AddedToken> read_added_tokens_decoder(const ConfigJson& json) {
  std::vector<TokenizerConfig::AddedToken> tokens;
  const auto& root = json.root();
  if (!root.contains("added_tokens_decoder") || root["added_tokens_decoder"].is_null()) return tokens;
  const auto& decoder = root["added_tokens_decoder"];
  if (!decoder.is_object()) json.fail("added_tokens_decoder", "expected an object");
  for (const auto& [key, token] : decoder.items()) {
    const std::string field = join_field("added_tokens_decoder", key);
    if (!token.is_object()) json.fail(field, "expected an object");
    tokens.push_back({parse_token_id(json, key, field), json.string_member(token, "content", join_field(field, "content")),
                      json.bool_or(token, "special", join_field(field, "special"), false)});
  }
  return tokens;
}

int32_t resolve_one(const std::optional<std::string>& configured, const std::string& fallback,
                    std::string_view key, const TokenizerConfig& config, const std::string& tokenizer_file,
                    const TokenizerModel& model) {
  const std::string& name = configured ? *configured : fallback;
  if (const auto id = model.find(name)) return *id;
  if (configured)
    throw std::runtime_error(config.file + ": " + std::string(key) + ": " + in_quotes(name) +
                             " is not a token");
  throw std::runtime_error(tokenizer_file + ": no " + in_quotes(name) + " token (needed as " +
                           std::string(key) + ")");
}

}  // namespace

TokenizerConfig read_tokenizer_config(const std::filesystem::path& file) {
  const ConfigJson json(file);
  TokenizerConfig config;
  config.file = json.name();
  config.add_bos_token = json.bool_or(json.root(), "add_bos_token", "add_bos_token", true);
  config.bos_token = read_token_name(json, "bos_token");
  config.eos_token = read_token_name(json, "eos_token");
  config.pad_token = read_token_name(json, "pad_token");
  config.unk_token = read_token_name(json, "unk_token");
  config.added_tokens_decoder = read_added_tokens_decoder(json);
  return config;
}

void resolve_special_tokens(const SpecialTokenNames& defaults, const TokenizerConfig& config,
                            const std::string& tokenizer_file, TokenizerModel& model) {
  model.bos_id = resolve_one(config.bos_token, defaults.bos, "bos_token", config, tokenizer_file, model);
  model.eos_id = resolve_one(config.eos_token, defaults.eos, "eos_token", config, tokenizer_file, model);
  model.pad_id = resolve_one(config.pad_token, defaults.pad, "pad_token", config, tokenizer_file, model);
  model.unk_id = resolve_one(config.unk_token, defaults.unk, "unk_token", config, tokenizer_file, model);
  model.add_bos_default = config.add_bos_token;
}

}  // namespace ge::tokenizer_detail
