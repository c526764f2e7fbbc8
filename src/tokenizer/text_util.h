// Small string helpers shared by the tokenizer's loaders and encoder.
#pragma once
#include <string>
#include <string_view>

namespace ge::tokenizer_detail {

struct StringReplace {
  std::string pattern;
  std::string content;
};

// out = in with every occurrence of r.pattern replaced (left to right, non-overlapping).
inline void replace_all(std::string_view in, const StringReplace& r, std::string& out) {
  out.clear();
  if (r.pattern.empty()) {
    out.append(in);
    return;
  }
  for (size_t pos = 0;;) {
    const size_t hit = in.find(r.pattern, pos);
    if (hit == std::string_view::npos) {
      out.append(in.substr(pos));
      return;
    }
    out.append(in.substr(pos, hit - pos)).append(r.content);
    pos = hit + r.pattern.size();
  }
}

// 'text', for error messages.
inline std::string in_quotes(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.append(1, '\'').append(text).append(1, '\'');
  return out;
}

}  // namespace ge::tokenizer_detail
