#include "runtime/chat_template.h"

#include <array>
#include <stdexcept>
#include <string_view>

namespace ge::runtime {
namespace {

// UTF-8 encodings of the code points Python's str.isspace() accepts; Jinja's `trim` is str.strip().
constexpr std::array<std::string_view, 29> kUnicodeWhitespace = {
    "\t",           "\n",           "\v",           "\f",           "\r",
    "\x1c",         "\x1d",         "\x1e",         "\x1f",         " ",
    "\xc2\x85",     "\xc2\xa0",     "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81",
    "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86",
    "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8",
    "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80",
};

// Length of the whitespace character `s` starts (or, with at_end, ends) with; 0 if none. UTF-8 is
// self-synchronizing, so matching whole encodings at either end cannot split another character.
size_t whitespace_length(std::string_view s, bool at_end) {
  for (std::string_view ws : kUnicodeWhitespace) {
    if (at_end ? s.ends_with(ws) : s.starts_with(ws)) return ws.size();
  }
  return 0;
}

std::string_view trim(std::string_view s) {
  while (size_t n = whitespace_length(s, /*at_end=*/false)) s.remove_prefix(n);
  while (size_t n = whitespace_length(s, /*at_end=*/true)) s.remove_suffix(n);
  return s;
}

// The template's only check: turn i (after the system message) is a user turn exactly when i is even.
void check_alternation(const ChatMessage& message, size_t turn) {
  if ((message.role == "user") != (turn % 2 == 0)) {
    throw std::invalid_argument(
        "render_chat: conversation roles must alternate user/assistant/user/assistant/...; turn " +
        std::to_string(turn) + " has role \"" + message.role + "\"");
  }
}

std::string_view turn_role(const ChatMessage& message) {
  return message.role == "assistant" ? std::string_view("model") : std::string_view(message.role);
}

}  // namespace

std::string render_chat(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  // The template indexes messages[0] unconditionally, so Jinja fails on an empty conversation too.
  if (messages.empty()) throw std::invalid_argument("render_chat: the conversation has no messages");
  const bool has_system = messages.front().role == "system";
  const std::span<const ChatMessage> turns = has_system ? messages.subspan(1) : messages;

  std::string out = "<bos>";
  for (size_t i = 0; i < turns.size(); ++i) {
    check_alternation(turns[i], i);
    out += "<start_of_turn>";
    out += turn_role(turns[i]);
    out += '\n';
    if (i == 0 && has_system) out += messages.front().content + "\n\n";
    // Future work: the template also accepts a list of {type: text|image} parts as content, emitting
    // "<start_of_image>" per image; that would slot in here as a content variant.
    out += trim(turns[i].content);
    out += "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace ge::runtime
