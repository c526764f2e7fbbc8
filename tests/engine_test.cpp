// Serving many sequences on the demo model and on the Gemma 3n and Gemma 4 fixtures: batched decode gives each row the logits of a lone step, the
// engine's concurrent answers equal those of each request run alone, and prefix reuse survives the sliding
// window through the ring snapshots taken at turn boundaries.
#include "runtime/engine.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstring>
#include <thread>

#include "loader/model_loader.h"
#include "test_util.h"

namespace ge::runtime {
namespace {

SamplingParams greedy() {
  SamplingParams s;
  s.temperature = 0;
  return s;
}

// The demo model and the Gemma 3n and Gemma 4 fixtures (all with sliding window 8; 3n's and gemma4-tiny's
// last layers read earlier layers' caches) with prompt steps of 4 tokens, so that their rings keep 3 positions beyond the window: any answer
// longer than that leaves the window behind.
class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  EngineTest() : m_(loader::load_model(test::fixture_model_dir(GetParam()), 4)), pool_(2) {}

  int64_t vocab() const { return m_.model->shape().vocab_size; }
  std::vector<int32_t> ids(const std::string& text) const { return m_.tokenizer.encode(text, true); }

  // Greedy text of `prompt` run alone in a fresh slot.
  std::string alone(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    Generator gen(*m_.model, m_.tokenizer, pool_);
    Slot slot(*m_.model, 256);
    Sampler sampler(greedy(), static_cast<int32_t>(vocab()));
    GenerateOptions o;
    o.max_new_tokens = max_tokens;
    std::string text;
    gen.generate(slot, prompt, sampler, o, [&](std::string_view t) {
      text += t;
      return true;
    });
    return text;
  }

  std::shared_ptr<Job> job(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    GenerateOptions o;
    o.max_new_tokens = max_tokens;
    return std::make_shared<Job>(prompt, std::vector<PreparedImage>{}, greedy(), o);
  }

  static Job::Progress finish(Job& j) {
    Job::Progress all;
    for (;;) {
      auto p = j.wait(std::chrono::milliseconds(100));
      all.text += p.text;
      if (p.done) {
        all.done = true;
        all.stats = p.stats;
        all.error = p.error;
        return all;
      }
    }
  }

  loader::LoadedModel m_;
  kernels::ThreadPool pool_;
};

TEST_P(EngineTest, BatchedDecodeGivesEachRowTheLogitsOfALoneStep) {
  const std::vector<std::string> prompts = {"The quick brown fox", "Once upon a time there", "Hello",
                                            "A B C D E F G H I J K"};
  std::vector<Slot> batched, single;
  std::vector<int32_t> next;
  Generator gen(*m_.model, m_.tokenizer, pool_);
  for (size_t i = 0; i < prompts.size(); ++i) {
    batched.emplace_back(*m_.model, 64);
    single.emplace_back(*m_.model, 64);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    gen.ingest(batched[i], ids(prompts[i]));
    gen.ingest(single[i], ids(prompts[i]));
    next.push_back(static_cast<int32_t>(17 + 5 * i));
  }
  // Several steps, so that positions differ across rows and the sliding rings wrap.
  std::vector<float> logits(prompts.size() * vocab()), one(vocab());
  for (int step = 0; step < 12; ++step) {
    std::vector<Slot*> slots;
    for (auto& s : batched) slots.push_back(&s);
    gen.decode(slots, next, logits.data());
    for (size_t i = 0; i < prompts.size(); ++i) {
      Slot* lone[1] = {&single[i]};
      gen.decode(lone, std::span(&next[i], 1), one.data());
      ASSERT_EQ(std::memcmp(one.data(), logits.data() + i * vocab(), one.size() * sizeof(float)), 0)
          << "row " << i << " step " << step;
      next[i] = static_cast<int32_t>(std::max_element(one.begin(), one.end()) - one.begin());
    }
  }
}

TEST_P(EngineTest, DecodeRowsMustNotShareACache) {
  Slot slot(*m_.model, 64);
  Generator gen(*m_.model, m_.tokenizer, pool_);
  gen.ingest(slot, ids("Hello"));
  std::vector<float> logits(2 * vocab());
  Slot* twice[2] = {&slot, &slot};
  const int32_t tokens[2] = {5, 6};
  EXPECT_THROW(gen.decode(twice, tokens, logits.data()), std::invalid_argument);
}

TEST_P(EngineTest, ConcurrentRequestsAnswerAsIfAlone) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> expected;
  for (int i = 0; i < 8; ++i) {
    // Prompts of different lengths (longer than a prompt step) so that prefill and decode interleave.
    std::string text = "Request number " + std::to_string(i);
    for (int w = 0; w < i * 3; ++w) text += " word" + std::to_string(w);
    prompts.push_back(ids(text));
    expected.push_back(alone(prompts.back(), 10 + i));  // before the engine starts: one thread per model
  }
  EngineOptions o;
  o.parallel = 3;
  o.context = 256;
  Engine engine(*m_.model, m_.tokenizer, pool_, nullptr, o);
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 8; ++i) {
    jobs.push_back(job(prompts[i], 10 + i));
    ASSERT_TRUE(engine.submit(jobs.back()));
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    const auto result = finish(*jobs[i]);
    EXPECT_EQ(result.error, "");
    EXPECT_EQ(result.stats.generated_tokens, static_cast<int64_t>(10 + i));
    EXPECT_EQ(result.text, expected[i]) << "request " << i;
  }
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.jobs, 8);
  EXPECT_GT(s.decode_rows, s.decode_steps);  // some steps ran several sequences at once
}

TEST_P(EngineTest, CancelledJobFreesItsSlotAndTheQueueIsBounded) {
  const std::string expected = alone(ids("Short"), 4);
  EngineOptions o;
  o.parallel = 1;
  o.context = 32768;  // long enough that the endless answer is still running when it is cancelled
  o.max_queue = 1;
  Engine engine(*m_.model, m_.tokenizer, pool_, nullptr, o);
  auto endless = job(ids("Tell me everything"), -1);
  ASSERT_TRUE(engine.submit(endless));
  while (endless->wait(std::chrono::milliseconds(100)).text.empty()) {
  }
  auto waiting = job(ids("Short"), 4);
  ASSERT_TRUE(engine.submit(waiting));
  EXPECT_FALSE(engine.submit(job(ids("One too many"), 4)));  // the queue holds one
  endless->cancel();
  const auto cancelled = finish(*endless);
  EXPECT_EQ(cancelled.stats.stop, StopReason::kCancelled);
  const auto served = finish(*waiting);
  EXPECT_EQ(served.error, "");
  EXPECT_EQ(served.text, expected);
}

TEST_P(EngineTest, BadPromptOrSamplingIsRefusedBeforeQueueing) {
  EngineOptions o;
  o.context = 8;
  Engine engine(*m_.model, m_.tokenizer, pool_, nullptr, o);
  EXPECT_THROW(engine.check(*job(ids("one two three four five six seven eight nine ten"), 4)),
               std::invalid_argument);
  EXPECT_THROW(engine.check(*job({1, 2, static_cast<int32_t>(vocab())}, 4)), std::invalid_argument);
  SamplingParams bad = greedy();
  bad.top_p = 2;
  EXPECT_THROW(engine.check(Job(ids("Hi"), {}, bad, {})), std::invalid_argument);
}

// A second turn whose history differs from what the slot generated (an edited or re-tokenized answer)
// shares the slot's sequence only up to the end of the first prompt, 30 tokens before the slot's end:
// far past the window, so only the snapshot taken there lets the slot keep the first turn.
TEST_P(EngineTest, BoundarySnapshotReusesThePrefixPastTheWindowWithColdLogits) {
  const auto first =
      ids("<start_of_turn>user\nThe quick brown fox jumps over the lazy "
          "dog<end_of_turn>\n<start_of_turn>model\n");
  auto second = first;
  for (const int32_t t : ids("An answer other than the generated one, then a new question: why?"))
    second.push_back(t);
  for (const int boundaries : {2, 0}) {
    Generator gen(*m_.model, m_.tokenizer, pool_, boundaries);
    Slot slot(*m_.model, 256), cold(*m_.model, 256);
    Sampler sampler(greedy(), static_cast<int32_t>(vocab()));
    GenerateOptions o;
    o.max_new_tokens = 30;
    gen.generate(slot, first, sampler, o, [](std::string_view) { return true; });
    ASSERT_EQ(slot.tokens.size(), first.size() + 30);
    GenerateStats stats;
    const auto logits = gen.ingest(slot, second, &stats);
    const std::vector<float> reused(logits.begin(), logits.end());
    if (boundaries == 0) {  // without snapshots the window has gone: everything runs again
      EXPECT_EQ(stats.reused_tokens, 0);
      continue;
    }
    EXPECT_EQ(stats.reused_tokens, static_cast<int64_t>(first.size()));
    EXPECT_EQ(stats.prompt_tokens, static_cast<int64_t>(second.size() - first.size()));
    const auto expected = gen.ingest(cold, second);
    EXPECT_LT(test::max_abs_diff(reused.data(), expected.data(), expected.size()), 1e-5f);

    // Regenerating the first answer: the first prompt again rewinds to its end.
    GenerateStats regen;
    gen.ingest(slot, first, &regen);
    EXPECT_EQ(regen.reused_tokens, static_cast<int64_t>(first.size() - 1));
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EngineTest,
                         ::testing::Values("gemma3-tiny", "gemma3n-tiny", "gemma4-tiny", "gemma4-moe-tiny"),
                         [](const auto& info) {
                           std::string name;
                           for (const char c : info.param)
                             if (std::isalnum(static_cast<unsigned char>(c))) name += c;
                           return name;
                         });

}  // namespace
}  // namespace ge::runtime
