// UTF-8 well-formedness rules (Unicode table 3-7), shared by the BPE character split, the decoder and
// the streaming decoder. Overlong forms, surrogates and code points past U+10FFFF are ill-formed.
#pragma once
#include <cstddef>
#include <string_view>

namespace ge::tokenizer_detail {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length of the sequence that `lead` starts, or 0 when no well-formed sequence starts with it.
inline int utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF5) return 4;
  return 0;
}

// Whether `c` may be byte number `index` (1-based after the lead) of a sequence starting with `lead`.
// The second byte's range depends on the lead; that is what excludes overlongs and surrogates.
inline bool utf8_continuation_ok(unsigned char lead, int index, unsigned char c) {
  if (index > 1) return c >= 0x80 && c <= 0xBF;
  switch (lead) {
    case 0xE0:
      return c >= 0xA0 && c <= 0xBF;
    case 0xED:
      return c >= 0x80 && c <= 0x9F;
    case 0xF0:
      return c >= 0x90 && c <= 0xBF;
    case 0xF4:
      return c >= 0x80 && c <= 0x8F;
    default:
      return c >= 0x80 && c <= 0xBF;
  }
}

// Length of the well-formed character at s[pos], or 0 when the bytes there do not form one.
inline size_t utf8_char_length(std::string_view s, size_t pos) {
  const auto lead = static_cast<unsigned char>(s[pos]);
  const int n = utf8_sequence_length(lead);
  if (n == 0 || pos + n > s.size()) return 0;
  for (int i = 1; i < n; ++i)
    if (!utf8_continuation_ok(lead, i, static_cast<unsigned char>(s[pos + i]))) return 0;
  return static_cast<size_t>(n);
}

inline bool is_valid_utf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = utf8_char_length(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

}  // namespace ge::tokenizer_detail
