#include "tokenizer/added_tokens.h"

namespace ge::tokenizer_detail {

void AddedTokens::add(std::string_view content, int32_t id) {
  if (content.empty()) return;  // an empty token would match everywhere; HF never matches it either
  int32_t node = 0;
  for (const char ch : content) {
    const auto c = static_cast<unsigned char>(ch);
    int32_t next = child(node, c);
    if (next < 0) {
      next = static_cast<int32_t>(token_at_.size());
      token_at_.push_back(-1);
      edges_.insert_or_assign(edge_key(node, c), next);
    }
    node = next;
  }
  token_at_[node] = id;
  starts_token_[static_cast<unsigned char>(content[0])] = true;
}

std::optional<AddedTokens::Match> AddedTokens::find_first(std::string_view text, size_t from) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!starts_token_[static_cast<unsigned char>(text[pos])]) continue;
    if (auto match = longest_at(text, pos)) return match;
  }
  return std::nullopt;
}

std::optional<int32_t> AddedTokens::find_exact(std::string_view content) const {
  int32_t node = 0;
  for (const char ch : content) {
    node = child(node, static_cast<unsigned char>(ch));
    if (node < 0) return std::nullopt;
  }
  if (node == 0 || token_at_[node] < 0) return std::nullopt;
  return token_at_[node];
}

std::optional<AddedTokens::Match> AddedTokens::longest_at(std::string_view text, size_t pos) const {
  std::optional<Match> best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (token_at_[node] >= 0) best = Match{pos, i + 1 - pos, token_at_[node]};
  }
  return best;
}

int32_t AddedTokens::child(int32_t node, unsigned char c) const {
  const int32_t* next = edges_.find(edge_key(node, c));
  return next ? *next : -1;
}

}  // namespace ge::tokenizer_detail
