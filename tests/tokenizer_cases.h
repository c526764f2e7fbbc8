// The 42 cases encoded by Hugging Face's Gemma 3 tokenizer, and that tokenizer itself, shared by the
// tests of every path that must reproduce its ids.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace ge::test {

struct TokenizerCase {
  std::string kind, text;
  std::vector<int32_t> ids, ids_with_bos;
};

inline std::vector<TokenizerCase> shared_cases() {
  std::vector<TokenizerCase> cases;
  for (const auto& c : read_json(data_dir() / "tokenizer_cases.json"))
    cases.push_back({c["kind"], c["text"], c["ids"], c["ids_with_bos"]});
  return cases;
}

inline std::filesystem::path real_tokenizer_dir() {
  return data_dir() / "../../third_party/tokenizer-gemma3/package/models";
}

// Loaded once: the real tokenizer is 33 MB. Fails (not skips) when scripts/setup.sh was not run.
inline const Tokenizer& real_tokenizer() {
  static const Tokenizer tok = [] {
    const std::filesystem::path dir = real_tokenizer_dir();
    if (!std::filesystem::exists(dir / "tokenizer.json"))
      throw std::runtime_error(dir.string() + "/tokenizer.json is missing: run scripts/setup.sh");
    return Tokenizer::load(dir);
  }();
  return tok;
}

// Every shared case encodes to Hugging Face's ids, with and without <bos>.
inline void expect_shared_case_ids(const Tokenizer& tok) {
  const auto cases = shared_cases();
  ASSERT_EQ(cases.size(), 42u);
  for (const TokenizerCase& c : cases) {
    SCOPED_TRACE(c.kind + ": " + c.text);
    EXPECT_EQ(tok.encode(c.text, false), c.ids);
    EXPECT_EQ(tok.encode(c.text, true), c.ids_with_bos);
  }
}

}  // namespace ge::test
