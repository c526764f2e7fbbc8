// Chat messages from a stranger (roles, contents, image counts) rendered in both of Gemma's formats, with and
// without thinking, their image markers expanded; and a model's streamed answer split into thought and answer.
#include <string_view>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/thinking.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge::runtime;
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  static const char* const kRoles[] = {"system", "user", "assistant", "model", "developer", "tool"};
  // Messages are separated by NUL bytes; each one's first byte picks its role and image count.
  std::vector<ChatMessage> messages;
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find('\0', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(start, end - start);
    const unsigned char pick = part.empty() ? 0 : static_cast<unsigned char>(part[0]);
    messages.push_back({kRoles[pick % 6], std::string(part.empty() ? part : part.substr(1)), (pick >> 3) % 3});
    start = end + 1;
  }
  const unsigned char flags = data[0];
  for (const ChatFormat format : {ChatFormat::kGemma, ChatFormat::kGemma4}) {
    try {
      const std::string prompt = render_chat(messages, flags & 1, format, flags & 2);
      std::vector<std::string> images(static_cast<size_t>((flags >> 2) % 4), "<image>");
      (void)expand_image_markers(prompt, images);
    } catch (const std::exception&) {
    }
  }
  ThoughtSplitter splitter;
  std::string thinking, answer;
  for (size_t at = 0; at < text.size(); at += 1 + flags % 7) {
    const auto parts = splitter.push(text.substr(at, 1 + flags % 7));
    thinking += parts.thinking;
    answer += parts.answer;
  }
  const auto rest = splitter.flush();
  // Nothing is made up: the parts are no longer than the text.
  if (thinking.size() + rest.thinking.size() + answer.size() + rest.answer.size() > text.size()) __builtin_trap();
  return 0;
}
