// Next-token selection from a logit vector: greedy or seeded random sampling with the usual filters.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace ge::runtime {

struct SamplingParams {
  float temperature = 1.0f;  // <= 0 => greedy (argmax, ties -> lowest id)
  int top_k = 0;             // 0 (or >= vocab) => disabled
  // 1 => disabled. Nucleus: the smallest set of top tokens (by logit, ties -> lowest id) whose cumulative
  // probability >= top_p, on the temperature-scaled distribution left by top-k. Always keeps one token.
  // The cumulative probability is compared at float precision, so 4 tokens of exactly 0.2 reach 0.8f.
  float top_p = 1.0f;
  float min_p = 0.0f;           // 0 => disabled; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;  // 1 => disabled; llama.cpp semantics, see Sampler
  int repeat_last_n = 64;       // window of `history` the penalty looks at; 0 => none, -1 => all of it
  uint64_t seed = 0;            // same seed + same logits => same choices
};

// Throws std::invalid_argument naming the first parameter out of range; returns `p`.
const SamplingParams& validated(const SamplingParams& p, int32_t vocab_size);

// Chain, in order: repetition penalty -> top-k -> temperature -> softmax -> top-p -> min-p -> draw from
// the renormalized survivors. That is llama.cpp's default order (penalties, top-k, top-p, min-p) except
// for temperature: llama.cpp applies it last, so its top-p / min-p see T = 1 probabilities, whereas here,
// as in Hugging Face transformers, they see the temperature-scaled distribution. (Top-k commutes with
// temperature.) Greedy decoding still applies the repetition penalty, as both of those do.
//
// The result is the exact distribution the chain defines; the speed comes from never sorting the whole
// vocabulary: top-k keeps a k-element heap, and top-p sorts only the tokens whose logit lies in the one
// narrow band where the cumulative mass crosses p (found with a histogram of scaled logits).
//
// Not thread-safe: use one Sampler per sequence.
class Sampler {
 public:
  // Validates `p` (std::invalid_argument) and preallocates every buffer sample() needs.
  Sampler(const SamplingParams& p, int32_t vocab_size);

  // Picks the next token id. `logits` must hold vocab_size entries, none NaN or +inf, not all -inf
  // (std::invalid_argument otherwise); the repetition penalty edits them in place. `history` holds the
  // tokens so far; only its last repeat_last_n ids are read (std::out_of_range for one outside the vocab).
  // Allocates nothing: the decode loop calls it for every token.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);

  void reseed(uint64_t seed) { rng_.seed(seed); }

 private:
  void apply_repeat_penalty(std::span<float> logits, std::span<const int32_t> history);
  std::span<int32_t> keep_top_k(std::span<const float> logits, float max_logit);
  std::span<int32_t> keep_top_p(std::span<const float> logits, float max_logit);
  std::span<int32_t> keep_above_min_p(std::span<const float> logits, float max_logit);
  std::span<int32_t> keep_min_p(std::span<int32_t> ids) const;
  int32_t draw(std::span<const int32_t> kept);

  SamplingParams params_;
  int32_t vocab_size_;
  std::mt19937_64 rng_;
  std::vector<int32_t> ids_;       // candidate token ids
  std::vector<float> weights_;     // exp((logit - max) / T) by token id; valid for the current candidates
  std::vector<uint16_t> bands_;    // by token id: top-p histogram band of its scaled logit
  std::vector<double> band_mass_;  // top-p histogram: summed weights per band
  std::vector<uint32_t> seen_at_;  // by token id: last penalty pass that saw it, to penalize each id once
  uint32_t penalty_pass_ = 0;
};

}  // namespace ge::runtime
