#include "runtime/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

namespace ge::runtime {
namespace {

// Golden renderings of Gemma 3's real Jinja template, produced by tests/data/chat_template/render.py (and of
// Google's published Gemma 4 template by render_gemma4.py: cases_gemma4.json).
nlohmann::json load_cases(const char* file = "cases.json") {
  std::ifstream in(std::string(GE_TEST_DATA "/chat_template/") + file);
  if (!in) throw std::runtime_error("cannot open chat_template/cases.json");
  return nlohmann::json::parse(in);
}

std::vector<ChatMessage> messages_of(const nlohmann::json& c) {
  std::vector<ChatMessage> messages;
  for (const auto& m : c.at("messages")) messages.push_back({m.at("role"), m.at("content")});
  return messages;
}

TEST(ChatTemplate, MatchesJinjaRenderingOfGemma3Template) {
  const nlohmann::json cases = load_cases();
  ASSERT_GE(cases.size(), 10u);
  int errors = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::vector<ChatMessage> messages = messages_of(c);
    const bool add_generation_prompt = c.at("add_generation_prompt");
    if (c.contains("error")) {
      ++errors;
      EXPECT_THROW(render_chat(messages, add_generation_prompt), std::invalid_argument);
    } else {
      EXPECT_EQ(render_chat(messages, add_generation_prompt), c.at("expected").get<std::string>());
    }
  }
  EXPECT_GE(errors, 3);
}

TEST(ChatTemplate, MatchesJinjaRenderingOfGemma4Template) {
  const nlohmann::json cases = load_cases("cases_gemma4.json");
  ASSERT_GE(cases.size(), 12u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    EXPECT_EQ(render_chat(messages_of(c), c.at("add_generation_prompt"), ChatFormat::kGemma4, c.at("thinking")),
              c.at("expected").get<std::string>());
  }
  const std::vector<ChatMessage> hello = {{"user", "Hello"}};
  EXPECT_THROW(render_chat(hello, true, ChatFormat::kGemma, true), std::invalid_argument);
  EXPECT_EQ(end_of_turn(ChatFormat::kGemma4), "<turn|>");
  EXPECT_EQ(end_of_turn(ChatFormat::kGemma), "<end_of_turn>");
}

TEST(ChatTemplate, AlternationErrorSaysWhatIsWrong) {
  const std::vector<ChatMessage> messages = {{"user", "a"}, {"user", "b"}};
  try {
    render_chat(messages, true);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("must alternate user/assistant"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("turn 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ge::runtime
