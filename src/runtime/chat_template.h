// Gemma's chat format, rendered in C++ instead of through a Jinja engine: the published template is
// short and fixed, and tests/data/chat_template/cases.json pins this code to the real template's output.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ge::runtime {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (rendered as "model") or "model"
  std::string content;
  // Images attached to the message, rendered before its text as the template renders a content list
  // [{type: image}..., {type: text}]: one "<start_of_image>" each, for the processor to expand.
  int64_t images = 0;
};

// Which of Gemma's chat formats a model speaks.
enum class ChatFormat {
  kGemma,   // <start_of_turn>role ... <end_of_turn> (Gemma 1, 2, 3, 3n)
  kGemma4,  // <|turn>role ... <turn|>, with a system turn of its own
};

// The piece that ends a turn, which ends a chat answer.
std::string_view end_of_turn(ChatFormat format);

// Renders `messages` in `format`: Gemma 4's as Google's published chat_template.jinja does for text turns (a
// leading system or developer message becomes a system turn, trimmed; `thinking` opens that turn with
// "<|think|>\n", and without it the generation prompt closes an empty thought channel; model turns lose their
// <|channel>...<channel|> thoughts, an answer right after another continues its turn; every content trimmed;
// roles as given, "assistant" as "model"; tools and images not supported), the others as described next (they
// have no thinking mode: `thinking` is an error there).
std::string render_chat(std::span<const ChatMessage> messages, bool add_generation_prompt, ChatFormat format,
                        bool thinking = false);

// Renders `messages` exactly as Gemma 3's chat_template (tokenizer_config.json) does, as text that starts
// with "<bos>" (the tokenizer matches it as a special token). Like the template:
//   - a leading system message is folded into the first user turn as "<system content>\n\n", untrimmed,
//     and vanishes if no turn follows it;
//   - turns must alternate starting with "user" (user at even positions, any other role at odd ones);
//   - each turn's content is stripped of leading/trailing Unicode whitespace (Jinja's `trim`, i.e.
//     Python's str.strip());
//   - "<start_of_turn>model\n" is appended when add_generation_prompt.
// Throws std::invalid_argument for an empty conversation or roles that break the alternation.
std::string render_chat(std::span<const ChatMessage> messages, bool add_generation_prompt);

// Gemma3Processor's expansion of a rendered prompt: the i-th "<start_of_image>" becomes the text of the
// i-th image (`image_texts`, from image_prompt_text). Throws when the counts differ.
std::string expand_image_markers(std::string_view text, std::span<const std::string> image_texts);

}  // namespace ge::runtime
