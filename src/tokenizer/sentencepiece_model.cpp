// SentencePiece tokenizer.model (a serialized ModelProto), BPE models with identity normalization as
// Gemma ships them. The protobuf is read by hand: only a few fields matter. Encoding follows
// transformers' slow GemmaTokenizer: control, unknown and user-defined pieces (and the added tokens of
// tokenizer_config.json) are split out of the raw text first, the rest goes through SentencePiece,
// which matches user-defined pieces again in the normalized text and BPE-encodes between them.
// A vocabulary handed over as lists (VocabularyData, from GGUF) goes through the same steps.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_model.h"
#include "tokenizer/utf8.h"

namespace ge::tokenizer_detail {
namespace {

static_assert(std::endian::native == std::endian::little, "protobuf fixed32 fields are read in place");

// sentencepiece_model.proto's BPE model type (its piece types: PieceType).
constexpr int kModelTypeBpe = 2;

struct SpPiece {
  std::string_view text;
  float score = 0;
  int type = kNormal;
};

// Defaults are the proto2 defaults of sentencepiece_model.proto.
struct SpModel {
  std::vector<SpPiece> pieces;
  int model_type = 1;  // UNIGRAM
  bool byte_fallback = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool has_charsmap = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// One protobuf message; `context` names it in errors ("pieces[12]", "trainer_spec").
class ProtoReader {
 public:
  enum Wire { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };
  struct Field {
    uint32_t number = 0;
    int wire = kVarint;
    uint64_t varint = 0;
    std::string_view bytes;  // kBytes payload, or the raw 4 / 8 bytes of fixed fields
  };

  ProtoReader(std::string_view data, const std::string& file, std::string context)
      : data_(data), file_(file), context_(std::move(context)) {}

  bool done() const { return pos_ >= data_.size(); }

  Field next() {
    Field f;
    const uint64_t tag = read_varint();
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<int>(tag & 7);
    switch (f.wire) {
      case kVarint:
        f.varint = read_varint();
        break;
      case kFixed64:
        f.bytes = take(8);
        break;
      case kFixed32:
        f.bytes = take(4);
        break;
      case kBytes:
        f.bytes = take(read_varint());
        break;
      default:
        fail("unsupported protobuf wire type " + std::to_string(f.wire));
    }
    return f;
  }

  // Checks the wire type of a field this reader interprets.
  void expect(const Field& f, int wire, std::string_view name) const {
    if (f.wire != wire) fail(std::string(name) + ": unexpected protobuf wire type " + std::to_string(f.wire));
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(file_ + ": " + context_ + ": " + what);
  }

 private:
  uint64_t read_varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) fail("truncated protobuf");
      const auto byte = static_cast<unsigned char>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    fail("malformed protobuf varint");
  }

  std::string_view take(uint64_t n) {
    if (n > data_.size() - pos_) fail("truncated protobuf");
    const std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  std::string_view data_;
  const std::string& file_;
  std::string context_;
  size_t pos_ = 0;
};

float fixed32_float(std::string_view bytes) {
  float v;
  std::memcpy(&v, bytes.data(), sizeof v);
  return v;
}

SpPiece parse_piece(std::string_view data, const std::string& file, size_t index) {
  ProtoReader r(data, file, "pieces[" + std::to_string(index) + "]");
  SpPiece piece;
  while (!r.done()) {
    const auto f = r.next();
    if (f.number == 1) {
      r.expect(f, ProtoReader::kBytes, "piece");
      piece.text = f.bytes;
    } else if (f.number == 2) {
      r.expect(f, ProtoReader::kFixed32, "score");
      piece.score = fixed32_float(f.bytes);
    } else if (f.number == 3) {
      r.expect(f, ProtoReader::kVarint, "type");
      piece.type = static_cast<int>(f.varint);
      if (piece.type < kNormal || piece.type > kByte)
        r.fail("type: unknown piece type " + std::to_string(piece.type));
    }
  }
  if (piece.text.empty()) r.fail("piece: empty");
  return piece;
}

void parse_trainer_spec(std::string_view data, const std::string& file, SpModel& model) {
  ProtoReader r(data, file, "trainer_spec");
  // int32 fields: negative values are sign-extended to 64 bits on the wire.
  const auto int32_of = [](const ProtoReader::Field& f) {
    return static_cast<int32_t>(static_cast<int64_t>(f.varint));
  };
  while (!r.done()) {
    const auto f = r.next();
    switch (f.number) {
      case 3:
        r.expect(f, ProtoReader::kVarint, "model_type");
        model.model_type = static_cast<int>(f.varint);
        break;
      case 35:
        r.expect(f, ProtoReader::kVarint, "byte_fallback");
        model.byte_fallback = f.varint != 0;
        break;
      case 40:
        r.expect(f, ProtoReader::kVarint, "unk_id");
        model.unk_id = int32_of(f);
        break;
      case 41:
        r.expect(f, ProtoReader::kVarint, "bos_id");
        model.bos_id = int32_of(f);
        break;
      case 42:
        r.expect(f, ProtoReader::kVarint, "eos_id");
        model.eos_id = int32_of(f);
        break;
      case 43:
        r.expect(f, ProtoReader::kVarint, "pad_id");
        model.pad_id = int32_of(f);
        break;
      default:
        break;
    }
  }
}

void parse_normalizer_spec(std::string_view data, const std::string& file, SpModel& model) {
  ProtoReader r(data, file, "normalizer_spec");
  while (!r.done()) {
    const auto f = r.next();
    switch (f.number) {
      case 2:
        r.expect(f, ProtoReader::kBytes, "precompiled_charsmap");
        model.has_charsmap = !f.bytes.empty();
        break;
      case 3:
        r.expect(f, ProtoReader::kVarint, "add_dummy_prefix");
        model.add_dummy_prefix = f.varint != 0;
        break;
      case 4:
        r.expect(f, ProtoReader::kVarint, "remove_extra_whitespaces");
        model.remove_extra_whitespaces = f.varint != 0;
        break;
      case 5:
        r.expect(f, ProtoReader::kVarint, "escape_whitespaces");
        model.escape_whitespaces = f.varint != 0;
        break;
      default:
        break;
    }
  }
}

SpModel parse_model(std::string_view data, const std::string& file) {
  ProtoReader r(data, file, "ModelProto");
  SpModel model;
  while (!r.done()) {
    const auto f = r.next();
    if (f.number < 1 || f.number > 3) continue;
    r.expect(f, ProtoReader::kBytes, "field " + std::to_string(f.number));
    if (f.number == 1) model.pieces.push_back(parse_piece(f.bytes, file, model.pieces.size()));
    if (f.number == 2) parse_trainer_spec(f.bytes, file, model);
    if (f.number == 3) parse_normalizer_spec(f.bytes, file, model);
  }
  if (model.pieces.empty()) r.fail("pieces: missing");
  if (model.pieces.size() > static_cast<size_t>(kMaxTokenId)) r.fail("pieces: too many");
  return model;
}

// What this BPE reproduces exactly; anything else would silently tokenize differently.
void check_supported(const SpModel& model, const std::string& file) {
  const auto fail = [&](std::string_view field, std::string_view what) {
    throw std::runtime_error(file + ": " + std::string(field) + ": " + std::string(what));
  };
  if (model.model_type != kModelTypeBpe)
    fail("trainer_spec.model_type", "only BPE (2) is supported, found " + std::to_string(model.model_type));
  if (model.has_charsmap)
    fail("normalizer_spec.precompiled_charsmap", "normalization rules are not supported");
  if (model.add_dummy_prefix) fail("normalizer_spec.add_dummy_prefix", "not supported");
  if (model.remove_extra_whitespaces) fail("normalizer_spec.remove_extra_whitespaces", "not supported");
}

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(file.string() + ": cannot read the file");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return std::move(bytes).str();
}

// The pieces SentencePiece's BPE may form by merging (its pieces_ map minus user-defined pieces, which
// are matched whole before BPE).
bool mergeable(int type) {
  return type == kNormal || type == kUnused;
}

TokenList list_tokens(const SpModel& model, const TokenizerConfig& config) {
  TokenList tokens;
  tokens.vocab_size = static_cast<int32_t>(model.pieces.size());
  int32_t count = tokens.vocab_size;
  for (const auto& a : config.added_tokens_decoder) count = std::max(count, a.id + 1);
  tokens.text.resize(count);
  tokens.special.resize(count);
  tokens.added.resize(count);
  for (int32_t id = 0; id < tokens.vocab_size; ++id) {
    const SpPiece& p = model.pieces[id];
    tokens.text[id] = p.text;
    tokens.special[id] = p.type == kControl || p.type == kUnknown;
    tokens.added[id] = p.type == kControl || p.type == kUnknown || p.type == kUserDefined;
  }
  for (const auto& a : config.added_tokens_decoder) {
    if (!tokens.text[a.id].empty() && tokens.text[a.id] != a.content)
      throw std::runtime_error(config.file + ": added_tokens_decoder." + std::to_string(a.id) + ": " +
                               in_quotes(a.content) + " but the tokenizer.model piece is " +
                               in_quotes(tokens.text[a.id]));
    tokens.text[a.id] = a.content;
    tokens.special[a.id] = a.special;
    tokens.added[a.id] = true;
  }
  return tokens;
}

// Every way to form a mergeable piece from two mergeable pieces, ranked by the formed piece's score
// (higher first, equal scores sharing a rank so that the leftmost pair wins, as in SentencePiece).
MergeTable derive_merges(const SpModel& model, const TokenizerModel& tokenizer) {
  std::vector<float> scores;
  for (const SpPiece& p : model.pieces)
    if (mergeable(p.type)) scores.push_back(p.score);
  std::sort(scores.begin(), scores.end(), std::greater<>());
  scores.erase(std::unique(scores.begin(), scores.end()), scores.end());

  const auto mergeable_id = [&](std::string_view text) -> int32_t {
    const auto id = tokenizer.vocab_index.find(tokenizer.pieces, text);
    return id && mergeable(model.pieces[*id].type) ? *id : -1;
  };
  MergeTable merges;
  for (int32_t id = 0; id < static_cast<int32_t>(model.pieces.size()); ++id) {
    const SpPiece& p = model.pieces[id];
    if (!mergeable(p.type)) continue;
    const auto rank = static_cast<uint32_t>(
        std::lower_bound(scores.begin(), scores.end(), p.score, std::greater<>()) - scores.begin());
    for (size_t cut = 0;;) {
      cut += std::max<size_t>(utf8_char_length(p.text, cut), 1);
      if (cut >= p.text.size()) break;
      const int32_t left = mergeable_id(p.text.substr(0, cut)), right = mergeable_id(p.text.substr(cut));
      if (left >= 0 && right >= 0) merges.insert_or_assign(left, right, Merge{rank, id});
    }
  }
  return merges;
}

std::vector<bool> unused_flags(const SpModel& model) {
  std::vector<bool> unused(model.pieces.size());
  bool any = false;
  for (size_t id = 0; id < model.pieces.size(); ++id) any |= unused[id] = model.pieces[id].type == kUnused;
  return any ? unused : std::vector<bool>{};
}

std::string piece_or(const SpModel& model, int32_t id, std::string_view fallback) {
  const bool valid = id >= 0 && static_cast<size_t>(id) < model.pieces.size();
  return std::string(valid ? model.pieces[id].text : fallback);
}

// Everything after reading the pieces and settings, whichever form they came in.
std::unique_ptr<TokenizerModel> build_tokenizer(const SpModel& sp, const TokenizerConfig& config,
                                                const std::string& name) {
  auto tokenizer = std::make_unique<TokenizerModel>();
  build_token_tables(list_tokens(sp, config), {"\xE2\x96\x81", " "}, *tokenizer);
  for (int32_t id = 0; id < static_cast<int32_t>(sp.pieces.size()); ++id)
    if (sp.pieces[id].type == kUserDefined) tokenizer->normalized_added.add(sp.pieces[id].text, id);
  if (sp.escape_whitespaces) tokenizer->normalizer = {{" ", "\xE2\x96\x81"}};
  BpeOptions options;
  options.byte_fallback = sp.byte_fallback;
  options.fuse_unk = true;  // SentencePiece merges a run of unknown pieces into one <unk>
  options.unk_id = sp.unk_id >= 0 && static_cast<size_t>(sp.unk_id) < sp.pieces.size() ? sp.unk_id : -1;
  tokenizer->bpe = BpeModel(tokenizer->pieces, tokenizer->vocab_index, derive_merges(sp, *tokenizer), options,
                            unused_flags(sp));

  resolve_special_tokens({piece_or(sp, sp.bos_id, "<bos>"), piece_or(sp, sp.eos_id, "<eos>"),
                          piece_or(sp, sp.pad_id, "<pad>"), piece_or(sp, sp.unk_id, "<unk>")},
                         config, name, *tokenizer);
  return tokenizer;
}

// ---- a vocabulary held in memory ----

[[noreturn]] void fail_vocabulary(const std::string& origin, std::string_view field, std::string_view what) {
  throw std::runtime_error(origin + ": " + std::string(field) + ": " + std::string(what));
}


// SentencePiece takes its unknown id from the piece typed unknown.
int32_t unknown_piece_id(const VocabularyData& v) {
  const auto it = std::find(v.types.begin(), v.types.end(), kUnknown);
  return it == v.types.end() ? -1 : static_cast<int32_t>(it - v.types.begin());
}

// GGUF keeps the pieces but not SentencePiece's settings. Gemma's are the only ones check_supported
// admits (BPE, no normalization rules, no dummy prefix, whitespace kept and escaped); byte fallback is on
// exactly when there are byte pieces, since the trainer adds all 256 then and only then.
SpModel sentencepiece_settings(const VocabularyData& v) {
  SpModel sp;
  sp.model_type = kModelTypeBpe;
  sp.add_dummy_prefix = false;
  sp.remove_extra_whitespaces = false;
  sp.byte_fallback = std::find(v.types.begin(), v.types.end(), kByte) != v.types.end();
  sp.unk_id = v.unk_id >= 0 ? v.unk_id : unknown_piece_id(v);
  sp.bos_id = v.bos_id;
  sp.eos_id = v.eos_id;
  sp.pad_id = v.pad_id;
  return sp;
}

// GGUF writers store user-defined pieces with "▁" turned into " " (so that llama.cpp matches them in
// the raw text); SentencePiece matches them in the normalized text, where spaces are "▁". Turning them
// back makes both the pieces and the encoding those of the tokenizer.model.
std::string_view piece_text(const VocabularyData& v, size_t id, std::deque<std::string>& respelled) {
  const std::string& text = v.tokens[id];
  if (v.types[id] != kUserDefined || text.find(' ') == std::string::npos) return text;
  respelled.emplace_back();
  replace_all(text, {" ", "\xE2\x96\x81"}, respelled.back());
  return respelled.back();
}

}  // namespace

void check_vocabulary(const VocabularyData& v, const std::string& origin) {
  const size_t n = v.tokens.size();
  if (n == 0) fail_vocabulary(origin, "tokens", "empty");
  if (n > static_cast<size_t>(kMaxTokenId)) fail_vocabulary(origin, "tokens", "too many");
  const auto check_count = [&](std::string_view field, size_t count) {
    if (count != n)
      fail_vocabulary(origin, field, std::to_string(count) + " values for " + std::to_string(n) + " tokens");
  };
  check_count("scores", v.scores.size());
  check_count("types", v.types.size());
  for (size_t id = 0; id < n; ++id) {
    // Empty text marks an id without a token in the tables built from it.
    if (v.tokens[id].empty()) fail_vocabulary(origin, indexed_field("tokens", id), "empty");
    if (std::isnan(v.scores[id])) fail_vocabulary(origin, indexed_field("scores", id), "not a number");
    if (v.types[id] < kNormal || v.types[id] > kByte)
      fail_vocabulary(origin, indexed_field("types", id),
                      "unknown token type " + std::to_string(v.types[id]) + " (expected 1 to 6)");
  }
  for (const auto& [field, id] : {std::pair{"bos_id", v.bos_id}, std::pair{"eos_id", v.eos_id},
                                  std::pair{"unk_id", v.unk_id}, std::pair{"pad_id", v.pad_id}})
    if (id < -1 || id >= static_cast<int64_t>(n))
      fail_vocabulary(origin, field,
                      std::to_string(id) + " is not a token id (" + std::to_string(n) + " tokens)");
}

std::unique_ptr<TokenizerModel> load_sentencepiece_model(const std::filesystem::path& file,
                                                         const TokenizerConfig& config) {
  const std::string name = file.string();
  const std::string data = read_file(file);
  const SpModel sp = parse_model(data, name);
  check_supported(sp, name);
  return build_tokenizer(sp, config, name);
}

std::unique_ptr<TokenizerModel> load_sentencepiece_vocabulary(const VocabularyData& vocabulary,
                                                              const std::string& origin) {
  check_vocabulary(vocabulary, origin);
  SpModel sp = sentencepiece_settings(vocabulary);
  std::deque<std::string> respelled;  // stable storage for the pieces' views
  sp.pieces.reserve(vocabulary.tokens.size());
  for (size_t id = 0; id < vocabulary.tokens.size(); ++id)
    sp.pieces.push_back({piece_text(vocabulary, id, respelled), vocabulary.scores[id], vocabulary.types[id]});
  TokenizerConfig config;
  config.add_bos_token = vocabulary.add_bos;
  return build_tokenizer(sp, config, origin);
}

std::vector<SentencePieceEntry> read_sentencepiece_pieces(const std::filesystem::path& file) {
  const std::string data = read_file(file);
  const SpModel sp = parse_model(data, file.string());
  std::vector<SentencePieceEntry> out;
  out.reserve(sp.pieces.size());
  for (const SpPiece& p : sp.pieces) out.push_back({std::string(p.text), p.score, p.type});
  return out;
}

}  // namespace ge::tokenizer_detail
