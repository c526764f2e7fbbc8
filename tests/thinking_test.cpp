// Gemma 4's thinking channel split from the answer as text streams in.
#include "runtime/thinking.h"

#include <gtest/gtest.h>

#include <vector>

namespace ge::runtime {
namespace {

ThoughtSplitter::Parts split(const std::vector<std::string>& pieces) {
  ThoughtSplitter s;
  ThoughtSplitter::Parts all;
  for (const std::string& p : pieces) {
    auto parts = s.push(p);
    all.thinking += parts.thinking;
    all.answer += parts.answer;
  }
  auto rest = s.flush();
  all.thinking += rest.thinking;
  all.answer += rest.answer;
  return all;
}

TEST(ThoughtSplitter, TokenByTokenThoughtThenAnswer) {
  const auto p = split({"<|channel>", "thought", "\n", "The user", " greets.", "<channel|>", "Hello", "!"});
  EXPECT_EQ(p.thinking, "The user greets.");
  EXPECT_EQ(p.answer, "Hello!");
}

TEST(ThoughtSplitter, MarksCutAcrossPiecesAreHeldUntilWhole) {
  const auto p = split({"<|cha", "nnel>thou", "ght\nA < B", " <chan", "nel|>Yes <", "3"});
  EXPECT_EQ(p.thinking, "A < B ");
  EXPECT_EQ(p.answer, "Yes <3");
}

TEST(ThoughtSplitter, TextWithoutMarksIsAllAnswerAndPassesAtOnce) {
  ThoughtSplitter s;
  EXPECT_EQ(s.push("Plain <b>text</b>").answer, "Plain <b>text</b>");
  EXPECT_EQ(s.push(" ends in <").answer, " ends in ");  // could begin a mark: held back
  EXPECT_FALSE(s.in_thought());
  EXPECT_EQ(s.flush().answer, "<");
}

TEST(ThoughtSplitter, ReportsWhetherAThoughtIsOpen) {
  ThoughtSplitter s;
  s.push("<|channel>thought\nhm");
  EXPECT_TRUE(s.in_thought());
  const auto p = s.push("m<channel|>ok");
  EXPECT_EQ(p.thinking, "m");
  EXPECT_EQ(p.answer, "ok");
  EXPECT_FALSE(s.in_thought());
}

TEST(ThoughtSplitter, AnUnfinishedThoughtEndsAsThought) {
  const auto p = split({"Before ", "<|channel>", "thought\n", "never closed <chan"});
  EXPECT_EQ(p.answer, "Before ");
  EXPECT_EQ(p.thinking, "never closed <chan");
}

TEST(ThoughtSplitter, SeveralThoughtsBetweenAnswers) {
  const auto p = split({"<|channel>thought\none<channel|>A<|channel>thought\ntwo<channel|>B"});
  EXPECT_EQ(p.thinking, "onetwo");
  EXPECT_EQ(p.answer, "AB");
}

}  // namespace
}  // namespace ge::runtime
