// Added (special and user-defined) tokens, found in text as Hugging Face's AddedVocabulary finds them:
// leftmost-longest, then the scan resumes after the match. A byte trie; at each position it is walked
// only as far as the text agrees.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "tokenizer/flat_map.h"

namespace ge::tokenizer_detail {

class AddedTokens {
 public:
  struct Match {
    size_t begin = 0;
    size_t length = 0;
    int32_t id = -1;
  };

  // A content added twice keeps the later id, as a map from content to id would.
  void add(std::string_view content, int32_t id);
  // The leftmost (then longest) token in text[from..], if any.
  std::optional<Match> find_first(std::string_view text, size_t from) const;
  std::optional<int32_t> find_exact(std::string_view content) const;

 private:
  std::optional<Match> longest_at(std::string_view text, size_t pos) const;
  int32_t child(int32_t node, unsigned char c) const;
  static uint64_t edge_key(int32_t node, unsigned char c) { return (static_cast<uint64_t>(node) << 8) | c; }

  FlatU64Map<int32_t> edges_;             // (node, byte) -> child node; node 0 is the root
  std::vector<int32_t> token_at_{-1};     // token id ending at each node, -1 for none
  std::array<bool, 256> starts_token_{};  // first bytes of tokens: lets the scan skip most positions
};

}  // namespace ge::tokenizer_detail
