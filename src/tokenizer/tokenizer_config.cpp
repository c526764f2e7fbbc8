// tokenizer_config.json (transformers' tokenizer settings) and the special-token resolution it feeds.
#include <charconv>
#include <stdexcept>

#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer_model.h"

namespace ge::tokenizer_detail {
namespace {

// transformers writes special tokens either as a plain string or as a serialized AddedToken object.
std::optional<std::string> read_token_name(const JsonFile& json, JsonFile::Object root,
                                           std::string_view key) {
  const auto e = json.optional_member(root, key);
  if (!e) return std::nullopt;
  if (e->is_string()) return std::string(json.as_string(*e, key));
  return std::string(json.string_member(json.as_object(*e, key), "content", join_field(key, "content")));
}

int32_t parse_token_id(const JsonFile& json, std::string_view key, std::string_view field) {
  int64_t id = -1;
  const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
  if (error != std::errc() || end != key.data() + key.size() || id < 0 || id > kMaxTokenId)
    json.fail(field, "expected a token id as the key");
  return static_cast<int32_t>(id);
}

std::vector<TokenizerConfig::AddedToken> read_added_tokens_decoder(const JsonFile& json,
                                                                   JsonFile::Object root) {
  std::vector<TokenizerConfig::AddedToken> tokens;
  const auto decoder = json.optional_member(root, "added_tokens_decoder");
  if (!decoder) return tokens;
  for (const auto [key, value] : json.as_object(*decoder, "added_tokens_decoder")) {
    const std::string field = join_field("added_tokens_decoder", key);
    const auto token = json.as_object(value, field);
    tokens.push_back({parse_token_id(json, key, field),
                      std::string(json.string_member(token, "content", join_field(field, "content"))),
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
  const JsonFile json(file);
  const auto root = json.root();
  TokenizerConfig config;
  config.file = json.name();
  config.add_bos_token = json.bool_or(root, "add_bos_token", "add_bos_token", true);
  config.bos_token = read_token_name(json, root, "bos_token");
  config.eos_token = read_token_name(json, root, "eos_token");
  config.pad_token = read_token_name(json, root, "pad_token");
  config.unk_token = read_token_name(json, root, "unk_token");
  config.added_tokens_decoder = read_added_tokens_decoder(json, root);
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
