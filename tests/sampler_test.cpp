#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

namespace ge::runtime {
namespace {

constexpr int kDraws = 100'000;
// 100k draws: one standard deviation of a frequency is at most 0.0016, so 0.01 is over 6 sigma.
constexpr double kFrequencyTolerance = 0.01;

// Eight logits, deliberately not sorted by id.
const std::vector<float> kLogits = {1.0f, 3.0f, 0.5f, 2.5f, -1.0f, 2.0f, 0.0f, 1.5f};

SamplingParams with_temperature(float t) {
  SamplingParams p;
  p.temperature = t;
  return p;
}

// Empirical distribution of `draws` samples; each draw gets a fresh copy, as sample() edits its logits.
std::vector<double> frequencies(Sampler& sampler, const std::vector<float>& logits,
                                std::span<const int32_t> history = {}, int draws = kDraws) {
  std::vector<double> freq(logits.size(), 0.0);
  std::vector<float> scratch;
  for (int i = 0; i < draws; ++i) {
    scratch = logits;
    ++freq[sampler.sample(scratch, history)];
  }
  for (double& f : freq) f /= draws;
  return freq;
}

// Softmax of logits / t restricted to `ids` (zero elsewhere), in double.
std::vector<double> softmax_over(const std::vector<float>& logits, const std::vector<int32_t>& ids,
                                 double t) {
  std::vector<double> p(logits.size(), 0.0);
  double total = 0.0;
  for (int32_t id : ids) total += p[id] = std::exp(logits[id] / t);
  for (double& x : p) x /= total;
  return p;
}

std::vector<int32_t> all_ids(size_t n) {
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

// The chain written the obvious way (full sort, double precision), to compare the sampler against.
std::vector<double> reference_distribution(std::vector<float> logits, const SamplingParams& p,
                                           std::span<const int32_t> history = {}) {
  if (p.repeat_penalty != 1.0f && p.repeat_last_n != 0) {
    const size_t window =
        p.repeat_last_n < 0 ? history.size() : std::min<size_t>(history.size(), p.repeat_last_n);
    for (int32_t id : std::set<int32_t>(history.end() - window, history.end())) {
      logits[id] = logits[id] > 0 ? logits[id] / p.repeat_penalty : logits[id] * p.repeat_penalty;
    }
  }
  std::vector<int32_t> order = all_ids(logits.size());
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < order.size()) order.resize(p.top_k);
  std::vector<double> prob = softmax_over(logits, order, p.temperature);
  if (p.top_p < 1.0f) {
    double cum = 0.0;
    size_t n = 0;
    while (n < order.size() && static_cast<float>(cum) < p.top_p) cum += prob[order[n++]];
    order.resize(n);
  }
  const double p_max = prob[order.front()];
  std::erase_if(order, [&](int32_t id) { return prob[id] < p.min_p * p_max; });
  return softmax_over(logits, order, p.temperature);
}

void expect_distribution(const std::vector<double>& freq, const std::vector<double>& expected) {
  ASSERT_EQ(freq.size(), expected.size());
  for (size_t i = 0; i < freq.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(freq[i], 0.0) << "token " << i << " is outside the kept set";
    } else {
      EXPECT_NEAR(freq[i], expected[i], kFrequencyTolerance) << "token " << i;
    }
  }
}

void expect_kept_set(const std::vector<double>& expected, const std::set<int32_t>& kept) {
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i] > 0.0, kept.contains(static_cast<int32_t>(i))) << "token " << i;
  }
}

TEST(Sampler, GreedyReturnsArgmax) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(5000);
  Sampler greedy(with_temperature(0.0f), 5000);
  for (int trial = 0; trial < 20; ++trial) {
    for (float& l : logits) l = normal(gen);
    const auto expected = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(greedy.sample(logits, {}), expected);
  }
}

TEST(Sampler, GreedyBreaksTiesTowardLowestIdAndIgnoresFilters) {
  SamplingParams p = with_temperature(0.0f);
  p.top_k = 1;
  p.top_p = 0.1f;
  Sampler greedy(p, 6);
  std::vector<float> logits = {0.0f, 4.0f, -2.0f, 4.0f, 1.0f, 4.0f};
  EXPECT_EQ(greedy.sample(logits, {}), 1);
}

TEST(Sampler, TemperatureScalesTheSoftmax) {
  for (float t : {0.5f, 1.0f, 2.0f}) {
    SCOPED_TRACE(t);
    Sampler sampler(with_temperature(t), kLogits.size());
    expect_distribution(frequencies(sampler, kLogits), softmax_over(kLogits, all_ids(kLogits.size()), t));
  }
}

TEST(Sampler, TopKKeepsTheKHighestLogits) {
  SamplingParams p;
  p.top_k = 3;
  Sampler sampler(p, kLogits.size());
  // Highest logits: 3.0 (id 1), 2.5 (id 3), 2.0 (id 5).
  expect_distribution(frequencies(sampler, kLogits), softmax_over(kLogits, {1, 3, 5}, 1.0));
}

TEST(Sampler, TopKBreaksTiesAtTheCutTowardLowestId) {
  SamplingParams p;
  p.top_k = 3;
  Sampler sampler(p, 6);
  const std::vector<float> logits = {0.5f, 2.0f, 1.0f, 1.0f, 1.0f, -3.0f};
  expect_distribution(frequencies(sampler, logits), softmax_over(logits, {1, 2, 3}, 1.0));
}

// Logits ln(q): probabilities q at T = 1, ids shuffled. Sorted: 0.4 (id 6), 0.25 (id 2), 0.15 (id 0),
// 0.1 (id 7), 0.05 (id 3), 0.03 (id 1), 0.01 (ids 4, 5).
std::vector<float> logits_from_probabilities() {
  const std::vector<double> q = {0.15, 0.03, 0.25, 0.05, 0.01, 0.01, 0.4, 0.1};
  std::vector<float> logits;
  for (double x : q) logits.push_back(static_cast<float>(std::log(x)));
  return logits;
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const std::vector<float> logits = logits_from_probabilities();
  // Cumulative: 0.4, 0.65, 0.8, 0.9, ... top_p = 0.7 stops at the third token.
  for (int top_k : {0, 6}) {  // the full-vocabulary path and the top-k path
    SCOPED_TRACE(top_k);
    SamplingParams p;
    p.top_p = 0.7f;
    p.top_k = top_k;
    Sampler sampler(p, logits.size());
    const std::vector<double> expected = softmax_over(logits, {6, 2, 0}, 1.0);
    expect_kept_set(reference_distribution(logits, p), {6, 2, 0});
    expect_distribution(frequencies(sampler, logits), expected);
  }
}

TEST(Sampler, TopPIncludesTheTokenWhereTheSumExactlyReachesP) {
  // Five tied tokens of probability exactly 0.2 (ids 0, 2, 4, 5, 7, taken lowest id first); the others
  // weigh exactly 0 in float. 4 x 0.2 reaches top_p = 0.8, so exactly four tokens survive.
  const std::vector<float> logits = {1.5f, -1000.0f, 1.5f, -1000.0f, 1.5f, 1.5f, -1000.0f, 1.5f};
  struct Case {
    float top_p;
    std::vector<int32_t> kept;
  };
  for (const Case& c : {Case{0.8f, {0, 2, 4, 5}}, Case{0.6f, {0, 2, 4}}, Case{0.81f, {0, 2, 4, 5, 7}},
                        Case{0.2f, {0}}, Case{0.0f, {0}}}) {
    for (int top_k : {0, 6}) {
      SCOPED_TRACE(testing::Message() << "top_p " << c.top_p << " top_k " << top_k);
      SamplingParams p;
      p.top_p = c.top_p;
      p.top_k = top_k;
      Sampler sampler(p, logits.size());
      expect_distribution(frequencies(sampler, logits, {}, 20'000), softmax_over(logits, c.kept, 1.0));
    }
  }
}

TEST(Sampler, MinPKeepsTokensWithinAFactorOfTheTop) {
  const std::vector<float> logits = logits_from_probabilities();
  SamplingParams p;
  p.min_p = 0.2f;  // p >= 0.08: ids 6, 2, 0, 7
  Sampler sampler(p, logits.size());
  expect_kept_set(reference_distribution(logits, p), {6, 2, 0, 7});
  expect_distribution(frequencies(sampler, logits), softmax_over(logits, {6, 2, 0, 7}, 1.0));
}

TEST(Sampler, MinPSeesTheTemperatureScaledDistribution) {
  const std::vector<float> logits = logits_from_probabilities();
  SamplingParams p;
  p.min_p = 0.2f;
  p.temperature = 2.0f;  // ratios become sqrt(q / 0.4) >= 0.2 <=> q >= 0.016: everything but ids 4, 5
  Sampler sampler(p, logits.size());
  expect_distribution(frequencies(sampler, logits), softmax_over(logits, {6, 2, 0, 7, 3, 1}, 2.0));
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce) {
  SamplingParams p;
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = 4;
  Sampler sampler(p, kLogits.size());
  // Window = the last 4 ids: 1 (twice, penalized once), 4, 6. Id 3 is older and escapes.
  const std::vector<int32_t> history = {3, 1, 4, 1, 6};
  std::vector<float> logits = kLogits;
  sampler.sample(logits, history);
  const std::vector<float> expected = {1.0f, 1.5f, 0.5f, 2.5f, -2.0f, 2.0f, 0.0f, 1.5f};
  EXPECT_EQ(logits, expected);

  expect_distribution(frequencies(sampler, kLogits, history), softmax_over(expected, all_ids(8), 1.0));
}

TEST(Sampler, RepeatPenaltyWindowOfMinusOneCoversAllHistory) {
  SamplingParams p = with_temperature(0.0f);
  p.repeat_penalty = 4.0f;
  p.repeat_last_n = -1;
  Sampler sampler(p, kLogits.size());
  const std::vector<int32_t> history = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<float> logits = kLogits;
  EXPECT_EQ(sampler.sample(logits, history), 3);  // 3.0 / 4 drops id 1 below id 3's 2.5
}

TEST(Sampler, CombinedChainMatchesReference) {
  SamplingParams p;
  p.repeat_penalty = 1.3f;
  p.top_k = 6;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.min_p = 0.1f;
  p.seed = 42;
  const std::vector<int32_t> history = {1, 4, 7};
  const std::vector<double> expected = reference_distribution(kLogits, p, history);
  EXPECT_EQ(std::count_if(expected.begin(), expected.end(), [](double x) { return x > 0; }), 4);
  Sampler sampler(p, kLogits.size());
  expect_distribution(frequencies(sampler, kLogits, history), expected);

  p.top_k = 0;  // the same filters through the full-vocabulary path
  Sampler full(p, kLogits.size());
  expect_distribution(frequencies(full, kLogits, history), reference_distribution(kLogits, p, history));
}

TEST(Sampler, NegativeInfinityLogitsAreNeverDrawn) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {-inf, 0.0f, -inf, 1.0f};
  Sampler sampler(with_temperature(1.0f), logits.size());
  expect_distribution(frequencies(sampler, logits), softmax_over(logits, {1, 3}, 1.0));
}

std::vector<int32_t> draw_sequence(Sampler& sampler, int n) {
  std::vector<int32_t> out;
  std::vector<float> scratch;
  for (int i = 0; i < n; ++i) {
    scratch = kLogits;
    out.push_back(sampler.sample(scratch, {}));
  }
  return out;
}

TEST(Sampler, SeedDeterminesTheSequence) {
  SamplingParams p = with_temperature(1.5f);
  p.seed = 1234;
  Sampler a(p, kLogits.size());
  Sampler b(p, kLogits.size());
  const std::vector<int32_t> first = draw_sequence(a, 500);
  EXPECT_EQ(first, draw_sequence(b, 500));

  p.seed = 1235;
  Sampler c(p, kLogits.size());
  EXPECT_NE(first, draw_sequence(c, 500));

  a.reseed(1234);
  EXPECT_EQ(first, draw_sequence(a, 500));
}

TEST(Sampler, RejectsBadInput) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_THROW(Sampler(p, 8), std::invalid_argument);
  p = {};
  p.top_k = -1;
  EXPECT_THROW(Sampler(p, 8), std::invalid_argument);
  p = {};
  p.repeat_penalty = 0.0f;
  EXPECT_THROW(Sampler(p, 8), std::invalid_argument);

  Sampler sampler(SamplingParams{}, 8);
  std::vector<float> short_logits(7, 0.0f);
  EXPECT_THROW(sampler.sample(short_logits, {}), std::invalid_argument);
  std::vector<float> nan_logits(8, 0.0f);
  nan_logits[5] = std::nanf("");
  EXPECT_THROW(sampler.sample(nan_logits, {}), std::invalid_argument);

  SamplingParams penalized;
  penalized.repeat_penalty = 1.1f;
  Sampler with_penalty(penalized, 8);
  std::vector<float> logits(8, 0.0f);
  const std::vector<int32_t> bad_history = {3, 8};
  EXPECT_THROW(with_penalty.sample(logits, bad_history), std::out_of_range);
}

// Reference order (logit desc, id asc) and the ranks in it that the reference keeps.
std::vector<int32_t> kept_in_rank_order(const std::vector<float>& logits,
                                        const std::vector<double>& expected) {
  std::vector<int32_t> order = all_ids(logits.size());
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::erase_if(order, [&](int32_t id) { return expected[id] == 0.0; });
  return order;
}

// Top-p over thousands of tokens, where the nucleus edge falls inside a crowded histogram band: nothing
// past the edge is ever drawn, and each tenth of the nucleus (by rank, so the tenth at the edge too)
// gets the reference's share of the draws.
TEST(Sampler, TopPOverManyTokensMatchesReference) {
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> logits(4096);
  for (float& l : logits) l = normal(gen);
  for (float top_p : {0.5f, 0.9f}) {
    SCOPED_TRACE(top_p);
    SamplingParams p;
    p.top_p = top_p;
    p.temperature = 0.9f;
    Sampler sampler(p, logits.size());
    const std::vector<double> expected = reference_distribution(logits, p);
    const std::vector<int32_t> kept = kept_in_rank_order(logits, expected);
    ASSERT_GT(kept.size(), 100u);
    const std::vector<double> freq = frequencies(sampler, logits, {}, 20'000);
    for (size_t id = 0; id < freq.size(); ++id) {
      if (expected[id] == 0.0) {
        EXPECT_EQ(freq[id], 0.0) << "token " << id << " is outside the nucleus";
      }
    }
    for (size_t tenth = 0; tenth < 10; ++tenth) {
      double want = 0.0, got = 0.0;
      for (size_t r = kept.size() * tenth / 10; r < kept.size() * (tenth + 1) / 10; ++r) {
        want += expected[kept[r]];
        got += freq[kept[r]];
      }
      EXPECT_NEAR(got, want, 0.015) << "tenth " << tenth << " of the nucleus";  // 20k draws: over 4 sigma
    }
  }
}

// Gemma's vocabulary size, shaped like real logits: a long random tail under a few dozen strong tokens.
std::vector<float> gemma_sized_logits() {
  std::mt19937 gen(99);
  std::normal_distribution<float> tail(-2.0f, 2.0f);
  std::vector<float> logits(262'144);
  for (float& l : logits) l = tail(gen);
  for (int i = 0; i < 40; ++i) logits[(i * 7919) % logits.size()] = 12.0f - 0.25f * i;
  return logits;
}

TEST(Sampler, GemmaSizedVocabKeepsTheReferenceSet) {
  const std::vector<float> logits = gemma_sized_logits();
  Sampler greedy(with_temperature(0.0f), logits.size());
  std::vector<float> scratch = logits;
  EXPECT_EQ(greedy.sample(scratch, {}), 0);  // 12.0 at id 0

  std::vector<SamplingParams> configs(5);
  configs[0].top_k = 64;
  configs[1].top_p = 0.95f;
  configs[2].min_p = 0.05f;
  configs[3].temperature = 0.7f;
  configs[3].top_k = 40;
  configs[3].top_p = 0.8f;
  configs[3].min_p = 0.01f;
  // configs[4]: plain temperature 1 over the whole vocabulary.
  for (const SamplingParams& p : configs) {
    SCOPED_TRACE(testing::Message() << "T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
                                    << " min_p " << p.min_p);
    Sampler sampler(p, logits.size());
    const std::vector<double> expected = reference_distribution(logits, p);
    const std::vector<double> freq = frequencies(sampler, logits, {}, 500);
    for (size_t id = 0; id < freq.size(); ++id) {
      if (expected[id] == 0.0) {
        EXPECT_EQ(freq[id], 0.0) << "token " << id << " is outside the kept set";
      }
    }
    // 500 draws: one standard deviation is at most 0.022.
    EXPECT_NEAR(freq[0], expected[0], 0.1) << "the top token";
  }
}

}  // namespace
}  // namespace ge::runtime
