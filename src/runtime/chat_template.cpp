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

// Gemma 4's strip_thinking: a model turn's text without its <|channel>...<channel|> parts (a part never closed
// is kept), trimmed. Earlier thoughts are not shown to the model again.
std::string without_thinking(std::string_view text) {
  constexpr std::string_view kOpen = "<|channel>", kClose = "<channel|>";
  std::string kept;
  for (size_t start = 0;;) {
    const size_t close = text.find(kClose, start);
    const std::string_view part = text.substr(start, close == std::string_view::npos ? close : close - start);
    kept += part.substr(0, part.find(kOpen));
    if (close == std::string_view::npos) break;
    start = close + kClose.size();
  }
  return std::string(trim(kept));
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

constexpr std::string_view kImageMarker = "<start_of_image>";

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
    for (int64_t k = 0; k < turns[i].images; ++k) out += kImageMarker;
    out += trim(turns[i].content);
    out += "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

std::string_view end_of_turn(ChatFormat format) {
  return format == ChatFormat::kGemma4 ? "<turn|>" : "<end_of_turn>";
}

std::string render_chat(std::span<const ChatMessage> messages, bool add_generation_prompt, ChatFormat format,
                        bool thinking) {
  if (format == ChatFormat::kGemma) {
    if (thinking) throw std::invalid_argument("render_chat: this model's chat format has no thinking mode");
    return render_chat(messages, add_generation_prompt);
  }
  const bool has_system =
      !messages.empty() && (messages.front().role == "system" || messages.front().role == "developer");
  std::string out = "<bos>";
  if (has_system || thinking) {
    out += "<|turn>system\n";
    if (thinking) out += "<|think|>\n";
    if (has_system) out += trim(messages.front().content);
    out += "<turn|>\n";
  }
  std::string_view previous_role;
  for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.images > 0) throw std::invalid_argument("render_chat: images in a Gemma 4 conversation are not supported yet");
    const std::string_view role = turn_role(m);
    // An answer right after another continues the same model turn.
    if (!(role == "model" && previous_role == "model")) ((out += "<|turn>") += role) += '\n';
    out += role == "model" ? without_thinking(m.content) : trim(m.content);
    out += "<turn|>\n";
    previous_role = role;
  }
  // Without thinking, the prompt closes an empty thought so that the model answers at once.
  if (add_generation_prompt) out += thinking ? "<|turn>model\n" : "<|turn>model\n<|channel>thought\n<channel|>";
  return out;
}

std::string expand_image_markers(std::string_view text, std::span<const std::string> image_texts) {
  std::string out;
  size_t used = 0;
  for (size_t at; (at = text.find(kImageMarker)) != std::string_view::npos; text.remove_prefix(at + kImageMarker.size())) {
    if (used == image_texts.size())
      throw std::invalid_argument("the prompt has more <start_of_image> markers than the " +
                                  std::to_string(image_texts.size()) + " image(s) given");
    out += text.substr(0, at);
    out += image_texts[used++];
  }
  if (used != image_texts.size())
    throw std::invalid_argument(std::to_string(image_texts.size()) + " image(s) given but the prompt has " +
                                std::to_string(used) + " <start_of_image> marker(s)");
  return out += text;
}

}  // namespace ge::runtime
