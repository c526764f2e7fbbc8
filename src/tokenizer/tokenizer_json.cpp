// Hugging Face tokenizer.json, for the components Gemma's files use: a BPE model (byte fallback, merges
// as [a, b] pairs or "a b" strings), Replace normalizers, a Split pre-tokenizer, added tokens matched in
// the raw text, and the Replace + ByteFallback + Fuse decoder. Anything else is rejected by name rather
// than tokenized differently from HF.
#include <algorithm>
#include <array>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_model.h"

namespace ge::tokenizer_detail {
namespace {

using Object = JsonFile::Object;

std::string_view type_of(const JsonFile& json, Object o, std::string_view field) {
  return json.string_member(o, "type", join_field(field, "type"));
}

// {"String": "..."}; HF's other pattern kind is a regex, which Gemma does not use.
std::string string_pattern(const JsonFile& json, Object o, std::string_view field) {
  const std::string pattern_field = join_field(field, "pattern");
  const auto pattern = json.as_object(json.member(o, "pattern", pattern_field), pattern_field);
  const auto text = json.optional_member(pattern, "String");
  if (!text) json.fail(pattern_field, "only {\"String\": ...} patterns are supported");
  return std::string(json.as_string(*text, join_field(pattern_field, "String")));
}

StringReplace read_replace(const JsonFile& json, Object o, std::string_view field) {
  return {string_pattern(json, o, field),
          std::string(json.string_member(o, "content", join_field(field, "content")))};
}

std::vector<StringReplace> read_normalizer(const JsonFile& json, Object root) {
  const auto e = json.optional_member(root, "normalizer");
  if (!e) return {};
  const auto normalizer = json.as_object(*e, "normalizer");
  const std::string_view type = type_of(json, normalizer, "normalizer");
  if (type == "Replace") return {read_replace(json, normalizer, "normalizer")};
  if (type != "Sequence") json.fail("normalizer.type", in_quotes(type) + " is not supported");
  std::vector<StringReplace> steps;
  const auto list = json.as_array(json.member(normalizer, "normalizers", "normalizer.normalizers"),
                                  "normalizer.normalizers");
  for (const auto step : list) {
    const std::string field = indexed_field("normalizer.normalizers", steps.size());
    const auto o = json.as_object(step, field);
    if (type_of(json, o, field) != "Replace")
      json.fail(join_field(field, "type"), "only Replace is supported");
    steps.push_back(read_replace(json, o, field));
  }
  return steps;
}

// Returns the Split delimiter, or "" when there is no pre-tokenizer.
std::string read_pre_tokenizer(const JsonFile& json, Object root) {
  const auto e = json.optional_member(root, "pre_tokenizer");
  if (!e) return {};
  const auto split = json.as_object(*e, "pre_tokenizer");
  if (type_of(json, split, "pre_tokenizer") != "Split")
    json.fail("pre_tokenizer.type", "only Split is supported");
  if (json.string_member(split, "behavior", "pre_tokenizer.behavior") != "MergedWithPrevious")
    json.fail("pre_tokenizer.behavior", "only MergedWithPrevious is supported");
  if (json.bool_or(split, "invert", "pre_tokenizer.invert", false))
    json.fail("pre_tokenizer.invert", "inverted splits are not supported");
  return string_pattern(json, split, "pre_tokenizer");
}

// The decoder must be Sequence[Replace, ByteFallback, Fuse]; returns the Replace step.
StringReplace read_decoder(const JsonFile& json, Object root) {
  const auto decoder = json.as_object(json.member(root, "decoder", "decoder"), "decoder");
  const auto steps = json.as_array(json.member(decoder, "decoders", "decoder.decoders"), "decoder.decoders");
  constexpr std::string_view kExpected[] = {"Replace", "ByteFallback", "Fuse"};
  const auto unsupported = [&] {
    json.fail("decoder", "only Sequence[Replace, ByteFallback, Fuse] is supported");
  };
  if (type_of(json, decoder, "decoder") != "Sequence" || steps.size() != std::size(kExpected)) unsupported();
  StringReplace replace;
  size_t i = 0;
  for (const auto step : steps) {
    const std::string field = indexed_field("decoder.decoders", i);
    const auto o = json.as_object(step, field);
    if (type_of(json, o, field) != kExpected[i]) unsupported();
    if (i == 0) replace = read_replace(json, o, field);
    ++i;
  }
  return replace;
}

void check_bpe_features(const JsonFile& json, Object model) {
  if (const auto type = json.optional_member(model, "type");
      type && json.as_string(*type, "model.type") != "BPE")
    json.fail("model.type", "only BPE models are supported");
  for (const std::string_view key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
    if (json.optional_member(model, key)) json.fail(join_field("model", key), "not supported (must be null)");
}

int32_t read_id(const JsonFile& json, JsonFile::Element e, std::string_view field) {
  const int64_t id = json.as_int(e, field);
  if (id < 0 || id > kMaxTokenId) json.fail(field, "id " + std::to_string(id) + " is out of range");
  return static_cast<int32_t>(id);
}

struct VocabEntry {
  int32_t id;
  std::string_view piece;
};

std::vector<VocabEntry> read_vocab(const JsonFile& json, Object model) {
  const auto vocab = json.as_object(json.member(model, "vocab", "model.vocab"), "model.vocab");
  std::vector<VocabEntry> entries;
  entries.reserve(vocab.size());
  for (const auto [piece, value] : vocab) {
    int64_t id = -1;
    if (value.get_int64().get(id) != simdjson::SUCCESS || id < 0 || id > kMaxTokenId)
      json.fail(join_field("model.vocab", piece),
                "expected a token id in [0, " + std::to_string(kMaxTokenId) + "]");
    entries.push_back({static_cast<int32_t>(id), piece});
  }
  return entries;
}

struct AddedTokenEntry {
  int32_t id;
  std::string_view content;
  bool special;
};

// Only the flags Gemma uses are supported: lstrip/rstrip/single_word would change what a match
// swallows, and normalized tokens are matched after normalization.
std::vector<AddedTokenEntry> read_added_tokens(const JsonFile& json, Object root) {
  std::vector<AddedTokenEntry> tokens;
  const auto list = json.optional_member(root, "added_tokens");
  if (!list) return tokens;
  for (const auto e : json.as_array(*list, "added_tokens")) {
    const std::string field = indexed_field("added_tokens", tokens.size());
    const auto token = json.as_object(e, field);
    for (const std::string_view flag : {"lstrip", "rstrip", "single_word", "normalized"})
      if (json.bool_or(token, flag, join_field(field, flag), false))
        json.fail(join_field(field, flag), "only false is supported");
    const std::string_view content = json.string_member(token, "content", join_field(field, "content"));
    if (content.empty()) json.fail(join_field(field, "content"), "empty");
    tokens.push_back(
        {read_id(json, json.member(token, "id", join_field(field, "id")), join_field(field, "id")), content,
         json.bool_or(token, "special", join_field(field, "special"), false)});
  }
  return tokens;
}

TokenList assemble_tokens(const JsonFile& json, const std::vector<VocabEntry>& vocab,
                          const std::vector<AddedTokenEntry>& added) {
  TokenList tokens;
  for (const auto& v : vocab) tokens.vocab_size = std::max(tokens.vocab_size, v.id + 1);
  int32_t count = tokens.vocab_size;
  for (const auto& a : added) count = std::max(count, a.id + 1);
  tokens.text.resize(count);
  tokens.special.resize(count);
  tokens.added.resize(count);
  for (const auto& v : vocab) {
    if (!tokens.text[v.id].empty()) json.fail("model.vocab", "id " + std::to_string(v.id) + " is used twice");
    tokens.text[v.id] = v.piece;
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const auto& a = added[i];
    if (!tokens.text[a.id].empty() && tokens.text[a.id] != a.content)
      json.fail(indexed_field("added_tokens", i),
                "id " + std::to_string(a.id) + " is " + in_quotes(tokens.text[a.id]) + " in model.vocab");
    tokens.text[a.id] = a.content;
    tokens.special[a.id] = a.special;
    tokens.added[a.id] = true;
  }
  return tokens;
}

// Hot loop over half a million entries: field names are only built when reporting an error.
std::pair<std::string_view, std::string_view> merge_pair(const JsonFile& json, JsonFile::Element e,
                                                         size_t index) {
  const auto fail = [&](std::string_view what) { json.fail(indexed_field("model.merges", index), what); };
  std::string_view left, right;
  if (e.is_string()) {
    const std::string_view text = e.get_string().value_unsafe();
    const size_t space = text.find(' ');
    if (space == std::string_view::npos || text.find(' ', space + 1) != std::string_view::npos)
      fail("expected \"left right\"");
    return {text.substr(0, space), text.substr(space + 1)};
  }
  JsonFile::Array pair;
  if (e.get_array().get(pair) != simdjson::SUCCESS || pair.size() != 2 ||
      pair.at(0).get_string().get(left) != simdjson::SUCCESS ||
      pair.at(1).get_string().get(right) != simdjson::SUCCESS)
    fail("expected [left, right] or \"left right\"");
  return {left, right};
}

struct MergeIds {
  int32_t left, right, merged;
};

// The ids of each merge's two pieces and of their concatenation, which must all be in the vocabulary
// as HF requires. Half a million merges look up tables larger than the cache: each merge's slots are
// prefetched kLookahead merges before they are probed, so that the memory latencies overlap.
std::vector<MergeIds> resolve_merges(const JsonFile& json, JsonFile::Array list,
                                     const TokenizerModel& tokenizer) {
  struct Pending {
    std::string_view left, right;
    std::string joined;
    std::array<size_t, 3> hash;
  };
  constexpr size_t kLookahead = 8;
  std::array<Pending, kLookahead> ring;
  const auto lookup = [&](std::string_view piece, size_t hash, size_t rank) {
    const auto id = tokenizer.vocab_index.find(tokenizer.pieces, piece, hash);
    if (!id) json.fail(indexed_field("model.merges", rank), in_quotes(piece) + " is not in model.vocab");
    return *id;
  };
  const auto resolve = [&](size_t rank) {
    const Pending& p = ring[rank % kLookahead];
    const int32_t left = lookup(p.left, p.hash[0], rank), right = lookup(p.right, p.hash[1], rank);
    return MergeIds{left, right, lookup(p.joined, p.hash[2], rank)};
  };
  std::vector<MergeIds> merges;
  merges.reserve(list.size());
  size_t count = 0;
  for (const auto e : list) {
    if (count >= kLookahead) merges.push_back(resolve(count - kLookahead));  // frees this ring slot
    Pending& p = ring[count % kLookahead];
    std::tie(p.left, p.right) = merge_pair(json, e, count);
    p.joined.assign(p.left).append(p.right);
    p.hash = {PieceIndex::hash_of(p.left), PieceIndex::hash_of(p.right), PieceIndex::hash_of(p.joined)};
    for (const size_t h : p.hash) tokenizer.vocab_index.prefetch(h);
    ++count;
  }
  for (size_t rank = count > kLookahead ? count - kLookahead : 0; rank < count; ++rank)
    merges.push_back(resolve(rank));
  return merges;
}

// Rank = position in the list. Inserts are prefetched ahead for the same reason as the lookups.
MergeTable build_merge_table(const std::vector<MergeIds>& merges) {
  constexpr size_t kLookahead = 16;
  MergeTable table;
  table.reserve(merges.size());  // no rehash below, so prefetched slots stay where they are
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    if (rank + kLookahead < merges.size())
      table.prefetch(merges[rank + kLookahead].left, merges[rank + kLookahead].right);
    const MergeIds& m = merges[rank];
    table.insert_or_assign(m.left, m.right, Merge{static_cast<uint32_t>(rank), m.merged});
  }
  return table;
}

BpeOptions read_bpe_options(const JsonFile& json, Object model, const TokenizerModel& tokenizer) {
  BpeOptions options;
  options.byte_fallback = json.bool_or(model, "byte_fallback", "model.byte_fallback", false);
  options.fuse_unk = json.bool_or(model, "fuse_unk", "model.fuse_unk", false);
  options.ignore_merges = json.bool_or(model, "ignore_merges", "model.ignore_merges", false);
  if (const auto unk = json.optional_member(model, "unk_token")) {
    const std::string_view name = json.as_string(*unk, "model.unk_token");
    const auto id = tokenizer.vocab_index.find(tokenizer.pieces, name);
    if (!id) json.fail("model.unk_token", in_quotes(name) + " is not in model.vocab");
    options.unk_id = *id;
  }
  return options;
}

// GGUF's tokenizer.ggml.merges as llama.cpp splits them: at the first space after the first byte.
std::vector<MergeIds> resolve_listed_merges(const VocabularyData& v, const TokenizerModel& tokenizer,
                                            const std::string& origin) {
  std::vector<MergeIds> merges;
  merges.reserve(v.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < v.merges.size(); ++rank) {
    const std::string_view text = v.merges[rank];
    const auto fail = [&](const std::string& what) {
      throw std::runtime_error(origin + ": " + indexed_field("merges", rank) + ": " + what);
    };
    const size_t space = text.size() > 1 ? text.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos) fail("expected \"left right\"");
    const std::string_view left = text.substr(0, space), right = text.substr(space + 1);
    joined.assign(left).append(right);
    int32_t ids[3];
    const std::string_view parts[3] = {left, right, joined};
    for (int i = 0; i < 3; ++i) {
      const auto id = tokenizer.vocab_index.find(tokenizer.pieces, parts[i]);
      if (!id) fail(in_quotes(parts[i]) + " is not a token");
      ids[i] = *id;
    }
    merges.push_back({ids[0], ids[1], ids[2]});
  }
  return merges;
}

}  // namespace

std::unique_ptr<TokenizerModel> load_bpe_vocabulary(const VocabularyData& v, const std::string& origin) {
  check_vocabulary(v, origin);
  TokenList tokens;
  tokens.vocab_size = static_cast<int32_t>(v.tokens.size());
  tokens.text.assign(v.tokens.begin(), v.tokens.end());
  tokens.special.resize(v.tokens.size());
  tokens.added.resize(v.tokens.size());
  bool byte_pieces = false;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const int type = v.types[id];
    tokens.special[id] = type == kControl || type == kUnknown;
    tokens.added[id] = tokens.special[id] || type == kUserDefined;
    byte_pieces |= type == kByte;
  }
  auto tokenizer = std::make_unique<TokenizerModel>();
  build_token_tables(tokens, {"\xE2\x96\x81", " "}, *tokenizer);
  tokenizer->normalizer = {{" ", "\xE2\x96\x81"}};
  BpeOptions options;
  options.byte_fallback = byte_pieces;
  options.fuse_unk = true;
  options.unk_id = v.unk_id;
  tokenizer->bpe = BpeModel(tokenizer->pieces, tokenizer->vocab_index,
                            build_merge_table(resolve_listed_merges(v, *tokenizer, origin)), options, {});
  const auto piece_or = [&](int32_t id, const char* fallback) {
    return id >= 0 ? v.tokens[id] : std::string(fallback);
  };
  TokenizerConfig config;
  config.add_bos_token = v.add_bos;
  resolve_special_tokens({piece_or(v.bos_id, "<bos>"), piece_or(v.eos_id, "<eos>"), piece_or(v.pad_id, "<pad>"),
                          piece_or(v.unk_id, "<unk>")},
                         config, origin, *tokenizer);
  return tokenizer;
}

std::unique_ptr<TokenizerModel> load_tokenizer_json(const std::filesystem::path& file,
                                                    const TokenizerConfig& config) {
  const JsonFile json(file);
  const auto root = json.root();
  const auto model = json.as_object(json.member(root, "model", "model"), "model");
  check_bpe_features(json, model);

  auto tokenizer = std::make_unique<TokenizerModel>();
  const TokenList tokens = assemble_tokens(json, read_vocab(json, model), read_added_tokens(json, root));
  build_token_tables(tokens, read_decoder(json, root), *tokenizer);
  tokenizer->normalizer = read_normalizer(json, root);
  tokenizer->split_delimiter = read_pre_tokenizer(json, root);
  const BpeOptions options = read_bpe_options(json, model, *tokenizer);
  const auto merges = json.as_array(json.member(model, "merges", "model.merges"), "model.merges");
  tokenizer->bpe = BpeModel(tokenizer->pieces, tokenizer->vocab_index,
                            build_merge_table(resolve_merges(json, merges, *tokenizer)), options, {});

  const std::string unk = options.unk_id >= 0 ? std::string(tokenizer->pieces[options.unk_id]) : "<unk>";
  resolve_special_tokens({"<bos>", "<eos>", "<pad>", unk}, config, json.name(), *tokenizer);
  return tokenizer;
}

}  // namespace ge::tokenizer_detail
