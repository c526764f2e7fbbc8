// The generation loop on the demo model: greedy text is reproducible, stop strings and EOS ids end it
// without being printed, and a slot reuses its cached prefix across turns.
#include <gtest/gtest.h>

#include "loader/model_loader.h"
#include "runtime/generator.h"
#include "test_util.h"

namespace ge::runtime {
namespace {

class GeneratorTest : public ::testing::Test {
 protected:
  GeneratorTest() : m_(loader::load_model(test::demo_model_dir(), 4)), pool_(2), gen_(*m_.model, m_.tokenizer, pool_) {}

  std::string generate(Slot& slot, const std::string& prompt, GenerateOptions o, GenerateStats* stats = nullptr) {
    SamplingParams greedy;
    greedy.temperature = 0;
    Sampler sampler(greedy, static_cast<int32_t>(m_.model->shape().vocab_size));
    std::string text;
    const auto s = gen_.generate(slot, m_.tokenizer.encode(prompt, true), sampler, o, [&](std::string_view t) {
      text += t;
      return true;
    });
    if (stats) *stats = s;
    return text;
  }

  loader::LoadedModel m_;
  kernels::ThreadPool pool_;
  Generator gen_;
};

TEST_F(GeneratorTest, GreedyGenerationIsReproducibleAndCounted) {
  GenerateOptions o;
  o.max_new_tokens = 20;
  Slot a(*m_.model, 128), b(*m_.model, 128);
  GenerateStats stats;
  const std::string first = generate(a, "The quick brown fox", o, &stats);
  EXPECT_EQ(stats.generated_tokens, 20);
  EXPECT_EQ(stats.stop, StopReason::kMaxTokens);
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(generate(b, "The quick brown fox", o), first);
}

TEST_F(GeneratorTest, StopStringEndsGenerationAndIsNotPrinted) {
  GenerateOptions o;
  o.max_new_tokens = 20;
  Slot slot(*m_.model, 128);
  const std::string full = generate(slot, "The quick brown fox", o);
  ASSERT_GE(full.size(), 6u);
  // A stop string taken from the middle of the greedy text, so it spans a token boundary or two.
  o.stop = {full.substr(3, 3)};
  GenerateStats stats;
  Slot again(*m_.model, 128);
  const std::string cut = generate(again, "The quick brown fox", o, &stats);
  EXPECT_EQ(stats.stop, StopReason::kStopString);
  EXPECT_EQ(cut, full.substr(0, full.find(o.stop[0])));
}

TEST_F(GeneratorTest, EosIdEndsGeneration) {
  GenerateOptions o;
  o.max_new_tokens = 20;
  Slot slot(*m_.model, 128);
  const std::string prompt = "The quick brown fox";
  generate(slot, prompt, o);
  // Make the first greedily generated token an EOS id: nothing is printed.
  const int32_t first_token = slot.tokens[m_.tokenizer.encode(prompt, true).size()];
  o.eos_ids = {first_token};
  GenerateStats stats;
  Slot again(*m_.model, 128);
  EXPECT_EQ(generate(again, prompt, o, &stats), "");
  EXPECT_EQ(stats.stop, StopReason::kEos);
  EXPECT_EQ(stats.generated_tokens, 0);
}

TEST_F(GeneratorTest, SlotReusesItsCachedPrefixAndGivesTheSameLogits) {
  Slot fresh(*m_.model, 128), reused(*m_.model, 128);
  const auto first = m_.tokenizer.encode("The quick brown fox jumps", true);
  const auto second = m_.tokenizer.encode("The quick brown fox jumps over the lazy dog again", true);
  gen_.ingest(reused, first);
  GenerateStats stats;
  const auto logits = gen_.ingest(reused, second, &stats);
  const std::vector<float> reused_logits(logits.begin(), logits.end());
  EXPECT_EQ(stats.reused_tokens, static_cast<int64_t>(first.size()));
  EXPECT_EQ(stats.prompt_tokens, static_cast<int64_t>(second.size() - first.size()));
  const auto expected = gen_.ingest(fresh, second);
  EXPECT_LT(test::max_abs_diff(reused_logits.data(), expected.data(), expected.size()), 1e-4f);
}

TEST_F(GeneratorTest, ContextFullStopsGeneration) {
  GenerateOptions o;
  Slot slot(*m_.model, 12);
  GenerateStats stats;
  generate(slot, "The quick", o, &stats);
  EXPECT_EQ(stats.stop, StopReason::kContextFull);
  EXPECT_EQ(static_cast<int64_t>(slot.tokens.size()), 12);
}

}  // namespace
}  // namespace ge::runtime
