#include "tokenizer/tokenizer_model.h"

namespace ge::tokenizer_detail {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// HF's ByteFallback decoder turns any token spelled exactly "<0xNN>" back into byte NN.
int16_t byte_piece_value(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text.back() != '>') return -1;
  const int high = hex_digit(text[3]), low = hex_digit(text[4]);
  if (high < 0 || low < 0) return -1;
  return static_cast<int16_t>(high * 16 + low);
}

}  // namespace

std::optional<int32_t> TokenizerModel::find(std::string_view piece) const {
  if (const auto id = added.find_exact(piece)) return id;
  return vocab_index.find(pieces, piece);
}

void build_token_tables(const TokenList& tokens, const StringReplace& decoder_replace,
                        TokenizerModel& model) {
  const auto count = static_cast<int32_t>(tokens.text.size());
  size_t bytes = 0;
  for (const std::string_view text : tokens.text) bytes += text.size();
  model.pieces.reserve(count, bytes);
  model.display.reserve(count, bytes);
  model.info.assign(count, TokenInfo{});
  std::string shown;
  for (int32_t id = 0; id < count; ++id) {
    const std::string_view text = tokens.text[id];
    TokenInfo& info = model.info[id];
    info.byte = byte_piece_value(text);
    info.special = tokens.special[id];
    info.present = !text.empty();
    model.pieces.push_back(text);
    if (info.byte >= 0) {
      shown.clear();
    } else {
      replace_all(text, decoder_replace, shown);
    }
    model.display.push_back(shown);
    if (tokens.added[id]) model.added.add(text, id);
  }
  model.vocab_index.build(model.pieces, tokens.vocab_size);
}

}  // namespace ge::tokenizer_detail
