#include "convert/vocab.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <unordered_map>

#include "formats/json_file.h"
#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer_model.h"

namespace ge::convert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// GGUF token types (llama.cpp's SentencePieceTokenTypes / gguf TokenType).
enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

Vocab padded_vocab(int64_t n) {
  Vocab v;
  v.tokens.reserve(n);
  for (int64_t i = 0; i < n; ++i) v.tokens.push_back("[PAD" + std::to_string(i) + "]");
  v.scores.assign(n, -10000.0f);
  v.types.assign(n, kUnused);
  return v;
}

// llama.cpp's does_token_look_special: added tokens that ought to be control tokens though not flagged.
bool looks_special(std::string_view t) {
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (t.starts_with("<|") && t.ends_with("|>")) return true;
  if (t.starts_with("<\xEF\xBD\x9C") && t.ends_with("\xEF\xBD\x9C>")) return true;  // <｜ ... ｜>
  return t.starts_with("<unused") && t.ends_with(">");
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

// A non-special added token: SentencePiece's "▁" pre-normalized to a space, as llama.cpp does.
void set_added(Vocab& v, int64_t id, std::string content, bool special) {
  if (special || looks_special(content)) {
    v.types[id] = kControl;
  } else {
    content = replace_all(std::move(content), "\xE2\x96\x81", " ");
    v.types[id] = kUserDefined;
  }
  v.scores[id] = -1000.0f;
  v.tokens[id] = std::move(content);
}

// tokenizer.model (as llama.cpp's _create_vocab_sentencepiece): pieces with their scores and types, then
// added_tokens.json (user-defined), then tokenizer_config.json's added_tokens_decoder; ids past the
// model's vocab_size are dropped, ids no file names become [PADn] (unused).
Vocab vocab_from_sentencepiece(const fs::path& dir, int64_t n_vocab, const json& tokenizer_config) {
  Vocab v = padded_vocab(n_vocab);
  const auto pieces = tokenizer_detail::read_sentencepiece_pieces(dir / "tokenizer.model");
  for (size_t id = 0; id < pieces.size() && static_cast<int64_t>(id) < n_vocab; ++id) {
    v.tokens[id] = pieces[id].text;
    v.scores[id] = pieces[id].score;
    v.types[id] = pieces[id].type;
  }
  const fs::path added_file = dir / "added_tokens.json";
  if (fs::is_regular_file(added_file)) {
    const json added = formats::read_json_file(added_file);
    if (!added.is_object()) fail(added_file.string() + ": expected an object of token -> id");
    for (const auto& [content, id_json] : added.items()) {
      if (!id_json.is_number_integer())
        fail(added_file.string() + ": " + content + ": expected an integer id");
      const int64_t id = id_json.get<int64_t>();
      if (id < 0 || id >= n_vocab) continue;
      v.tokens[id] = content;
      v.scores[id] = -1000.0f;
      v.types[id] = kUserDefined;
    }
  }
  if (tokenizer_config.contains("added_tokens_decoder") &&
      tokenizer_config["added_tokens_decoder"].is_object()) {
    for (const auto& [key, data] : tokenizer_config["added_tokens_decoder"].items()) {
      int64_t id = -1;
      try {
        id = std::stoll(key);
      } catch (const std::exception&) {
        fail((dir / "tokenizer_config.json").string() + ": added_tokens_decoder: '" + key + "' is not an id");
      }
      if (id < 0 || id >= n_vocab || !data.is_object() || !data.contains("content") ||
          !data["content"].is_string())
        continue;
      set_added(v, id, data["content"].get<std::string>(), data.value("special", false));
    }
  }
  return v;
}

bool is_byte_piece(std::string_view t) {
  return t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
         std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]));
}

// tokenizer.json's BPE model as read: its pieces by id (padded to n_vocab; <0xNN> pieces typed bytes, the rest
// normal, score 0), its merges as "left right", and its added tokens.
struct TokenizerJson {
  struct Added {
    int64_t id;
    std::string content;
    bool special;
  };
  Vocab vocab;
  std::vector<bool> in_vocab;  // ids model.vocab names
  std::vector<std::string> merges;
  std::vector<Added> added;
};

TokenizerJson read_tokenizer_json(const fs::path& dir, int64_t n_vocab) {
  using tokenizer_detail::JsonFile;
  const JsonFile file(dir / "tokenizer.json");
  const auto root = file.root();
  const auto model = file.as_object(file.member(root, "model", "model"), "model");
  if (file.string_member(model, "type", "model.type") != "BPE")
    file.fail("model.type", "only BPE is supported");
  TokenizerJson t;
  t.vocab = padded_vocab(n_vocab);
  t.in_vocab.resize(n_vocab);
  for (const auto [piece, id_el] :
       file.as_object(file.member(model, "vocab", "model.vocab"), "model.vocab")) {
    const int64_t id = file.as_int(id_el, "model.vocab");
    if (id < 0 || id >= n_vocab) continue;
    t.vocab.tokens[id] = std::string(piece);
    t.vocab.scores[id] = 0.0f;
    t.vocab.types[id] = is_byte_piece(piece) ? kByte : kNormal;
    t.in_vocab[id] = true;
  }
  for (const auto m : file.as_array(file.member(model, "merges", "model.merges"), "model.merges")) {
    if (m.is_string()) {
      const std::string_view s = file.as_string(m, "model.merges");
      if (s.find(' ') == std::string_view::npos) file.fail("model.merges", "a merge without a space");
      t.merges.emplace_back(s);
      continue;
    }
    const auto pair = file.as_array(m, "model.merges");
    if (pair.size() != 2) file.fail("model.merges", "a merge is not a pair");
    std::string merge;
    for (const auto part : pair) {
      const std::string_view piece = file.as_string(part, "model.merges");
      // GGUF keeps a merge as "left right": a piece with a space could not be told apart.
      if (piece.empty() || piece.find(' ') != std::string_view::npos)
        file.fail("model.merges", "a merged piece is empty or has a space");
      merge += merge.empty() ? std::string(piece) : " " + std::string(piece);
    }
    t.merges.push_back(std::move(merge));
  }
  if (const auto added = file.optional_member(root, "added_tokens")) {
    for (const auto a : file.as_array(*added, "added_tokens")) {
      const auto o = file.as_object(a, "added_tokens");
      const int64_t id = file.as_int(file.member(o, "id", "added_tokens.id"), "added_tokens.id");
      if (id < 0 || id >= n_vocab) continue;
      t.added.push_back({id, std::string(file.string_member(o, "content", "added_tokens.content")),
                         file.bool_or(o, "special", "added_tokens.special", false)});
    }
  }
  return t;
}

// tokenizer.json only: the same "llama" vocabulary, score = -(rank of the first merge that forms the
// piece), 0 for pieces no merge forms; <0xNN> pieces are bytes, added tokens control (special) or
// user-defined (so <unk>, a special added token, is control, as the tokenizer.model path makes it too).
Vocab vocab_from_tokenizer_json(const fs::path& dir, int64_t n_vocab) {
  TokenizerJson t = read_tokenizer_json(dir, n_vocab);
  Vocab& v = t.vocab;
  std::unordered_map<std::string, uint32_t> rank_of;  // formed piece -> lowest merge rank
  uint32_t rank = 0;
  for (const std::string& m : t.merges) {
    const size_t space = m.find(' ');
    rank_of.try_emplace(m.substr(0, space) + m.substr(space + 1), rank++);
  }
  for (int64_t id = 0; id < n_vocab; ++id) {
    if (!t.in_vocab[id]) continue;
    const auto it = rank_of.find(v.tokens[id]);
    if (it != rank_of.end()) v.scores[id] = -static_cast<float>(it->second);
  }
  for (TokenizerJson::Added& a : t.added) {
    const float score = v.scores[a.id];
    set_added(v, a.id, std::move(a.content), a.special);
    v.scores[a.id] = t.in_vocab[a.id] ? score : 0.0f;
  }
  return std::move(t.vocab);
}

// tokenizer_config.json's "{typ}_token": a string or {"content": ...}.
std::optional<std::string> token_name(const json& tc, const std::string& key) {
  if (!tc.contains(key)) return std::nullopt;
  const json& e = tc[key];
  if (e.is_string()) return e.get<std::string>();
  if (e.is_object() && e.contains("content") && e["content"].is_string())
    return e["content"].get<std::string>();
  return std::nullopt;
}

// Special token ids, add_bos/add_eos and the chat template, as gguf-py's SpecialVocab finds them:
// tokenizer_config.json names first, then config.json's *_token_id integers.
void add_special_vocab(formats::GgufWriter& w, const fs::path& dir, const json& tokenizer_config,
                       const json& config, const std::vector<std::string>& tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const std::pair<const char*, const char*> kinds[] = {{"bos", "tokenizer.ggml.bos_token_id"},
                                                       {"eos", "tokenizer.ggml.eos_token_id"},
                                                       {"unk", "tokenizer.ggml.unknown_token_id"},
                                                       {"pad", "tokenizer.ggml.padding_token_id"}};
  for (const auto& [typ, key] : kinds) {
    std::optional<int64_t> id;
    if (const auto name = token_name(tokenizer_config, std::string(typ) + "_token")) {
      const auto it = std::find(tokens.begin(), tokens.end(), *name);
      if (it != tokens.end()) id = it - tokens.begin();
    }
    const std::string id_key = std::string(typ) + "_token_id";
    for (const json* c : {&config, config.contains("text_config") ? &config["text_config"] : nullptr}) {
      if (id || !c || !c->is_object() || !c->contains(id_key) || !(*c)[id_key].is_number_integer()) continue;
      const int64_t i = (*c)[id_key].get<int64_t>();
      if (i >= 0 && i < n) id = i;
    }
    if (id) w.add(key, static_cast<uint32_t>(*id));
  }
  for (const char* typ : {"bos", "eos"}) {
    const std::string k = std::string("add_") + typ + "_token";
    if (tokenizer_config.contains(k) && tokenizer_config[k].is_boolean())
      w.add("tokenizer.ggml." + k, tokenizer_config[k].get<bool>());
  }
  std::optional<std::string> tmpl;
  if (tokenizer_config.contains("chat_template") && tokenizer_config["chat_template"].is_string()) {
    tmpl = tokenizer_config["chat_template"].get<std::string>();
  } else if (fs::is_regular_file(dir / "chat_template.jinja")) {
    std::ifstream in(dir / "chat_template.jinja", std::ios::binary);
    tmpl = std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else if (fs::is_regular_file(dir / "chat_template.json")) {
    const json j = formats::read_json_file(dir / "chat_template.json");
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
      tmpl = j["chat_template"].get<std::string>();
  }
  if (tmpl) w.add("tokenizer.chat_template", *tmpl);
}

// Written by every vocabulary writer after the tokens.
void add_common_keys(formats::GgufWriter& w, const Checkpoint& ckpt, const std::vector<std::string>& tokens) {
  add_special_vocab(w, ckpt.dir, ckpt.tokenizer_config, ckpt.config, tokens);
  w.add("tokenizer.ggml.add_space_prefix", false);
}

}  // namespace

std::vector<std::string> add_bpe_vocabulary(formats::GgufWriter& w, const Checkpoint& ckpt, int64_t n_vocab) {
  const fs::path& dir = ckpt.dir;
  if (!fs::is_regular_file(dir / "tokenizer.json")) fail(dir.string() + ": tokenizer.json not found");
  TokenizerJson t = read_tokenizer_json(dir, n_vocab);
  Vocab& v = t.vocab;
  // llama.cpp's Gemma4Model.set_vocab: every score -1000 (the merges rank the pairs); these tokens stay
  // visible in its output (user-defined) so that its chat parser sees the thinking and tool-call marks.
  static const std::set<std::string, std::less<>> kVisible = {
      "<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", "<|\"|>"};
  std::fill(v.scores.begin(), v.scores.end(), -1000.0f);
  for (TokenizerJson::Added& a : t.added) {
    v.types[a.id] = a.special && !kVisible.count(a.content) ? kControl : kUserDefined;
    v.tokens[a.id] = std::move(a.content);
  }
  w.add("tokenizer.ggml.model", std::string("gemma4"));
  w.add("tokenizer.ggml.tokens", v.tokens);
  w.add("tokenizer.ggml.scores", std::move(v.scores));
  w.add("tokenizer.ggml.token_type", std::move(v.types));
  w.add("tokenizer.ggml.merges", std::move(t.merges));
  add_common_keys(w, ckpt, v.tokens);
  return std::move(v.tokens);
}

std::vector<std::string> add_vocabulary(formats::GgufWriter& w, const Checkpoint& ckpt, int64_t n_vocab) {
  const fs::path& dir = ckpt.dir;
  Vocab vocab;
  if (fs::is_regular_file(dir / "tokenizer.model")) {
    vocab = vocab_from_sentencepiece(dir, n_vocab, ckpt.tokenizer_config);
  } else if (fs::is_regular_file(dir / "tokenizer.json")) {
    vocab = vocab_from_tokenizer_json(dir, n_vocab);
  } else {
    fail(dir.string() + ": neither tokenizer.model nor tokenizer.json found");
  }
  w.add("tokenizer.ggml.model", std::string("llama"));
  w.add("tokenizer.ggml.pre", std::string("default"));
  w.add("tokenizer.ggml.tokens", vocab.tokens);
  w.add("tokenizer.ggml.scores", std::move(vocab.scores));
  w.add("tokenizer.ggml.token_type", std::move(vocab.types));
  add_common_keys(w, ckpt, vocab.tokens);
  return std::move(vocab.tokens);
}

}  // namespace ge::convert
