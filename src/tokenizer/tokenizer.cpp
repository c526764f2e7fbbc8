#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "tokenizer/tokenizer_model.h"
#include "tokenizer/utf8.h"

namespace ge {
namespace td = tokenizer_detail;
namespace {

struct EncodeScratch {
  std::string normalized, spare;
  td::BpeScratch bpe;
};

bool has_token(const td::TokenizerModel& m, int32_t id) {
  return id >= 0 && id < m.pieces.size() && m.info[id].present;
}

// Pre-tokenize normalized text, BPE each word.
void encode_words(const td::TokenizerModel& m, std::string_view normalized, std::vector<int32_t>& ids,
                  EncodeScratch& scratch) {
  const auto bpe = [&](std::string_view word) {
    m.bpe.encode(word, m.pieces, m.vocab_index, ids, scratch.bpe);
  };
  const std::string_view delimiter = m.split_delimiter;
  if (delimiter.empty()) return bpe(normalized);
  // Split with MergedWithPrevious: every delimiter ends the word it follows.
  size_t start = 0;
  for (size_t hit; (hit = normalized.find(delimiter, start)) != std::string_view::npos;) {
    bpe(normalized.substr(start, hit + delimiter.size() - start));
    start = hit + delimiter.size();
  }
  bpe(normalized.substr(start));
}

// Text between added tokens: normalize, match the tokens that are matched after normalization, encode
// the words in between.
void encode_plain(const td::TokenizerModel& m, std::string_view text, std::vector<int32_t>& ids,
                  EncodeScratch& scratch) {
  if (text.empty()) return;
  std::string_view normalized = text;
  for (const auto& step : m.normalizer) {
    td::replace_all(normalized, step, scratch.spare);
    std::swap(scratch.spare, scratch.normalized);
    normalized = scratch.normalized;
  }
  size_t pos = 0;
  while (const auto match = m.normalized_added.find_first(normalized, pos)) {
    encode_words(m, normalized.substr(pos, match->begin - pos), ids, scratch);
    ids.push_back(match->id);
    pos = match->begin + match->length;
  }
  encode_words(m, normalized.substr(pos), ids, scratch);
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<const td::TokenizerModel> model) : model_(std::move(model)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& dir) {
  const auto json = dir / "tokenizer.json", sentencepiece = dir / "tokenizer.model";
  const auto config_file = dir / "tokenizer_config.json";
  const td::TokenizerConfig config =
      std::filesystem::exists(config_file) ? td::read_tokenizer_config(config_file) : td::TokenizerConfig{};
  if (std::filesystem::exists(json)) return Tokenizer(td::load_tokenizer_json(json, config));
  if (std::filesystem::exists(sentencepiece))
    return Tokenizer(td::load_sentencepiece_model(sentencepiece, config));
  throw std::runtime_error(json.string() + ": not found, and no tokenizer.model beside it");
}

Tokenizer Tokenizer::from_vocabulary(const VocabularyData& vocabulary, const std::string& origin) {
  if (!vocabulary.merges.empty()) return Tokenizer(td::load_bpe_vocabulary(vocabulary, origin));
  return Tokenizer(td::load_sentencepiece_vocabulary(vocabulary, origin));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  const auto& m = *model_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos) ids.push_back(m.bos_id);
  EncodeScratch scratch;
  size_t pos = 0;
  while (const auto match = m.added.find_first(text, pos)) {
    encode_plain(m, text.substr(pos, match->begin - pos), ids, scratch);
    ids.push_back(match->id);
    pos = match->begin + match->length;
  }
  encode_plain(m, text.substr(pos), ids, scratch);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const auto& m = *model_;
  std::string out, bytes;
  const auto flush_bytes = [&] {
    if (td::is_valid_utf8(bytes)) {
      out += bytes;
    } else {
      for (size_t i = 0; i < bytes.size(); ++i) out += td::kReplacementChar;
    }
    bytes.clear();
  };
  for (const int32_t id : ids) {
    if (!has_token(m, id)) continue;
    if (const int byte = m.info[id].byte; byte >= 0) {
      bytes.push_back(static_cast<char>(byte));
      continue;
    }
    flush_bytes();
    out += m.display[id];
  }
  flush_bytes();
  return out;
}

std::string_view Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= size())
    throw std::out_of_range("Tokenizer::piece: id " + std::to_string(id) + " is not in [0, " +
                            std::to_string(size()) + ")");
  return model_->pieces[id];
}

std::optional<int32_t> Tokenizer::find(std::string_view piece) const {
  return model_->find(piece);
}
int32_t Tokenizer::size() const {
  return model_->pieces.size();
}
int32_t Tokenizer::bos_id() const {
  return model_->bos_id;
}
int32_t Tokenizer::eos_id() const {
  return model_->eos_id;
}
int32_t Tokenizer::pad_id() const {
  return model_->pad_id;
}
int32_t Tokenizer::unk_id() const {
  return model_->unk_id;
}
bool Tokenizer::is_special(int32_t id) const {
  return has_token(*model_, id) && model_->info[id].special;
}
bool Tokenizer::add_bos_default() const {
  return model_->add_bos_default;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok) : model_(tok.model_.get()) {}

std::string StreamDecoder::push(int32_t id) {
  std::string out;
  if (!has_token(*model_, id)) return out;
  const int byte = model_->info[id].byte;
  if (byte < 0) {
    drain_invalid(out);  // a character interrupted by another token can no longer complete
    out += model_->display[id];
    return out;
  }
  pending_[pending_size_++] = static_cast<unsigned char>(byte);
  drain_complete(out);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  drain_invalid(out);
  return out;
}

void StreamDecoder::reset() {
  pending_size_ = 0;
}

// Emits the complete characters at the front of the pending bytes, and U+FFFD for bytes that turn out
// not to start one; stops at an incomplete but so far valid character. Never more than 4 bytes wait.
void StreamDecoder::drain_complete(std::string& out) {
  while (pending_size_ > 0) {
    const unsigned char lead = pending_[0];
    const int need = td::utf8_sequence_length(lead);
    int valid = need > 0 ? 1 : 0;
    while (valid > 0 && valid < need && valid < pending_size_ &&
           td::utf8_continuation_ok(lead, valid, pending_[valid]))
      ++valid;
    int consumed = 0;
    if (need > 0 && valid == need) {
      out.append(reinterpret_cast<const char*>(pending_.data()), need);
      consumed = need;
    } else if (need > 0 && valid == pending_size_) {
      return;
    } else {
      consumed = std::max(valid, 1);
      for (int i = 0; i < consumed; ++i) out += td::kReplacementChar;
    }
    std::copy(pending_.begin() + consumed, pending_.begin() + pending_size_, pending_.begin());
    pending_size_ -= consumed;
  }
}

void StreamDecoder::drain_invalid(std::string& out) {
  for (int i = 0; i < pending_size_; ++i) out += td::kReplacementChar;
  pending_size_ = 0;
}

}  // namespace ge
