#include "runtime/thinking.h"

#include <algorithm>

namespace ge::runtime {
namespace {

constexpr std::string_view kOpen = "<|channel>", kClose = "<channel|>";

// The length of the longest end of `text` that could begin `mark`: text that must wait for the next piece.
size_t partial_mark(std::string_view text, std::string_view mark) {
  for (size_t n = std::min(text.size(), mark.size() - 1); n > 0; --n)
    if (mark.starts_with(text.substr(text.size() - n))) return n;
  return 0;
}

}  // namespace

ThoughtSplitter::Parts ThoughtSplitter::push(std::string_view piece) {
  pending_ += piece;
  Parts out;
  for (;;) {
    if (state_ == State::kChannelName) {  // "thought\n": the channel's name, not part of the thought
      const size_t newline = pending_.find('\n');
      if (newline == std::string::npos) break;
      pending_.erase(0, newline + 1);
      state_ = State::kThought;
      continue;
    }
    const std::string_view mark = state_ == State::kAnswer ? kOpen : kClose;
    std::string& part = state_ == State::kAnswer ? out.answer : out.thinking;
    const size_t at = pending_.find(mark);
    if (at == std::string::npos) {
      const size_t keep = partial_mark(pending_, mark);
      part.append(pending_, 0, pending_.size() - keep);
      pending_.erase(0, pending_.size() - keep);
      break;
    }
    part.append(pending_, 0, at);
    pending_.erase(0, at + mark.size());
    state_ = state_ == State::kAnswer ? State::kChannelName : State::kAnswer;
  }
  return out;
}

ThoughtSplitter::Parts ThoughtSplitter::flush() {
  Parts out;
  (state_ == State::kAnswer ? out.answer : out.thinking) = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace ge::runtime
