// Gemma 4's thinking channel in generated text: "<|channel>thought\n...<channel|>" before the answer (and,
// with tools, between calls). Splits the text as it streams into the thought and the answer, for `gemma run`
// to show the thought apart and for the servers' thinking / reasoning_content fields.
#pragma once
#include <string>
#include <string_view>

namespace ge::runtime {

class ThoughtSplitter {
 public:
  struct Parts {
    std::string thinking, answer;
  };
  // The text `piece` completes. A mark cut between pieces is held back until it is whole.
  Parts push(std::string_view piece);
  // What is held back at the end of the stream (an unfinished mark is text).
  Parts flush();
  // Inside a thought: its opening mark was seen, its closing one not yet.
  bool in_thought() const { return state_ != State::kAnswer; }

 private:
  enum class State { kAnswer, kChannelName, kThought };
  std::string pending_;
  State state_ = State::kAnswer;
};

}  // namespace ge::runtime
