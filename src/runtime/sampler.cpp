#include "runtime/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace ge::runtime {
namespace {

// Top-p histogram resolution: bands of 1/64 in scaled logit (a weight ratio of e^(1/64) = 1.016), up to a
// distance of 64 below the max (weight e^-64 = 1.6e-28); everything farther shares the last band, whose
// mass can never matter for a float top_p < 1 at any vocabulary size that fits in memory. Narrow bands
// keep the one band that gets sorted small even when the nucleus holds most of the vocabulary.
constexpr float kBandsPerUnit = 64.0f;
constexpr size_t kBands = 4096;

// Independent accumulators for summing the vocabulary: one running sum is a serial dependency chain,
// and without -ffast-math the compiler may not reassociate it into vector lanes.
constexpr size_t kLanes = 16;

// Candidate order: higher logit first, lower id first among equal logits (the greedy tie rule too). A
// strict total order, so heaps and sorts are deterministic.
struct ByLogitDesc {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

// exp(x) for x <= 0, accurate to 1e-7 relative (like libm's expf) but branch-free, so the loop over the
// vocabulary vectorizes (3x faster than std::exp here). Cody-Waite reduction x = n ln2 + r, Cephes' expf
// polynomial on r, 2^n built in the exponent bits. Results below FLT_MIN (x < -87.3, including -inf)
// are 0: such a token weighs under 1e-38 of the top one.
float exp_nonpositive(float x) {
  constexpr float kMinArg = -87.33654f;                          // ln(FLT_MIN)
  const int32_t in_range = -static_cast<int32_t>(x >= kMinArg);  // all ones or zero
  // Clamped with bit masks: a conditional here stops GCC from vectorizing the loop.
  x = std::bit_cast<float>((std::bit_cast<int32_t>(x) & in_range) |
                           (std::bit_cast<int32_t>(kMinArg) & ~in_range));
  constexpr float kRoundToInt = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504f + kRoundToInt) - kRoundToInt;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float two_to_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return std::bit_cast<float>(std::bit_cast<int32_t>(p * two_to_n) & in_range);
}

// Unnormalized probability exp((logit - max) / T); the max token weighs exactly 1, so min-p is
// `weight >= min_p`.
float weight_of(float logit, float max_logit, float inv_temperature) {
  return exp_nonpositive((logit - max_logit) * inv_temperature);
}

// Band of a token's scaled distance below the max; monotone in the logit, so each band is a contiguous
// run of the candidate order.
uint16_t band_of(float logit, float max_logit, float inv_temperature) {
  constexpr float kLastBand = static_cast<float>(kBands - 1);
  return static_cast<uint16_t>(std::min((max_logit - logit) * inv_temperature * kBandsPerUnit, kLastBand));
}

// Integer with the same order as the float (a negative float's magnitude bits are flipped), so that a
// max over logits is an integer max, which vectorizes. NaNs land beyond the keys of +-inf.
int32_t order_key(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);
  return bits ^ ((bits >> 31) & 0x7fffffff);
}

// Lowest id among the maximal logits; rejects logits that have no meaningful softmax.
int32_t checked_argmax(std::span<const float> logits) {
  int32_t highest = std::numeric_limits<int32_t>::min();
  int32_t lowest = std::numeric_limits<int32_t>::max();
  for (float x : logits) {
    highest = std::max(highest, order_key(x));
    lowest = std::min(lowest, order_key(x));
  }
  constexpr float kInf = std::numeric_limits<float>::infinity();
  if (lowest < order_key(-kInf) || highest >= order_key(kInf) || highest == order_key(-kInf)) {
    throw std::invalid_argument(
        "the model's logits are NaN or infinite (or all -inf): its weights hold NaN or Inf values (a damaged "
        "file?) or its activations overflowed");
  }
  // order_key is its own inverse. Found by float equality, so -0 and +0 tie as they do everywhere else.
  const float max = std::bit_cast<float>(order_key(std::bit_cast<float>(highest)));
  return static_cast<int32_t>(std::find(logits.begin(), logits.end(), max) - logits.begin());
}

double sum_in_lanes(std::span<const float> weights) {
  std::array<double, kLanes> lane_sum{};
  const size_t whole = weights.size() - weights.size() % kLanes;
  for (size_t i = 0; i < whole; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lane_sum[j] += weights[i + j];
  }
  double sum = 0.0;
  for (size_t i = whole; i < weights.size(); ++i) sum += weights[i];
  for (double s : lane_sum) sum += s;
  return sum;
}

// Summed weights of `ids`, four chains at a time (a gather, so no vector lanes, but no serial chain).
double sum_of(std::span<const int32_t> ids, const std::vector<float>& weights) {
  std::array<double, 4> lane_sum{};
  const size_t whole = ids.size() - ids.size() % lane_sum.size();
  for (size_t i = 0; i < whole; i += lane_sum.size()) {
    for (size_t j = 0; j < lane_sum.size(); ++j) lane_sum[j] += weights[ids[i + j]];
  }
  double sum = 0.0;
  for (size_t i = whole; i < ids.size(); ++i) sum += weights[ids[i]];
  for (double s : lane_sum) sum += s;
  return sum;
}

// Whether cumulative mass `cum` (out of `total`) reaches top_p. The probability is rounded to float, the
// precision top_p comes in, so that e.g. exactly 4 of 5 equal tokens reach top_p = 0.8f (0.800000012).
bool reaches(double cum, double total, float top_p) {
  return static_cast<float>(cum / total) >= top_p;
}

// Length of the nucleus prefix of `sorted`, given the mass `cum` of the tokens ranked before it: up to and
// including the first token where the cumulative mass reaches top_p; all of `sorted` if none does.
size_t nucleus_length(std::span<const int32_t> sorted, const std::vector<float>& weights, double cum,
                      double total, float top_p) {
  for (size_t j = 0; j < sorted.size(); ++j) {
    cum += weights[sorted[j]];
    if (reaches(cum, total, top_p)) return j + 1;
  }
  return sorted.size();
}


}  // namespace

const SamplingParams& validated(const SamplingParams& p, int32_t vocab_size) {
  auto require = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("SamplingParams: ") + what);
  };
  require(vocab_size > 0, "vocab_size must be positive");
  require(!std::isnan(p.temperature) && p.temperature < std::numeric_limits<float>::infinity(),
          "temperature must be finite");
  require(p.top_k >= 0, "top_k must be >= 0");
  require(p.top_p >= 0.0f && p.top_p <= 1.0f, "top_p must be in [0, 1]");
  require(p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p must be in [0, 1]");
  require(p.repeat_penalty > 0.0f && std::isfinite(p.repeat_penalty), "repeat_penalty must be > 0");
  require(p.repeat_last_n >= -1, "repeat_last_n must be >= -1");
  return p;
}

Sampler::Sampler(const SamplingParams& p, int32_t vocab_size)
    : params_(validated(p, vocab_size)), vocab_size_(vocab_size), rng_(p.seed) {
  ids_.resize(vocab_size);
  weights_.resize(vocab_size);
  bands_.resize(vocab_size);
  band_mass_.resize(kBands);
  seen_at_.resize(vocab_size);
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  if (logits.size() != static_cast<size_t>(vocab_size_)) {
    throw std::invalid_argument("Sampler: expected " + std::to_string(vocab_size_) + " logits, got " +
                                std::to_string(logits.size()));
  }
  apply_repeat_penalty(logits, history);
  const int32_t best = checked_argmax(logits);
  if (params_.temperature <= 0.0f) return best;
  if (params_.top_k > 0 && params_.top_k < vocab_size_) return draw(keep_top_k(logits, logits[best]));
  if (params_.top_p < 1.0f) return draw(keep_top_p(logits, logits[best]));
  return draw(keep_above_min_p(logits, logits[best]));
}

void Sampler::apply_repeat_penalty(std::span<float> logits, std::span<const int32_t> history) {
  if (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0) return;
  const size_t window =
      params_.repeat_last_n < 0 ? history.size() : std::min<size_t>(history.size(), params_.repeat_last_n);
  if (++penalty_pass_ == 0) {  // wrapped: old stamps could collide with the new pass numbers
    std::fill(seen_at_.begin(), seen_at_.end(), 0);
    penalty_pass_ = 1;
  }
  for (int32_t id : history.last(window)) {
    if (id < 0 || id >= vocab_size_) {
      throw std::out_of_range("Sampler: history holds token id " + std::to_string(id) + " outside the vocab");
    }
    if (seen_at_[id] == penalty_pass_) continue;
    seen_at_[id] = penalty_pass_;
    float& logit = logits[id];
    logit = logit > 0.0f ? logit / params_.repeat_penalty : logit * params_.repeat_penalty;
  }
}

// Top-k by a bounded heap (worst kept candidate on top): one comparison per token for typical logits,
// instead of sorting the vocabulary. Then softmax, top-p and min-p over the k survivors.
std::span<int32_t> Sampler::keep_top_k(std::span<const float> logits, float max_logit) {
  const ByLogitDesc better{logits.data()};
  const std::span<int32_t> heap(ids_.data(), params_.top_k);
  std::iota(heap.begin(), heap.end(), 0);
  std::make_heap(heap.begin(), heap.end(), better);
  float worst = logits[heap.front()];
  for (int32_t id = params_.top_k; id < vocab_size_; ++id) {
    if (logits[id] <= worst) continue;  // a tie loses too: every id in the heap is lower
    std::pop_heap(heap.begin(), heap.end(), better);
    heap.back() = id;
    std::push_heap(heap.begin(), heap.end(), better);
    worst = logits[heap.front()];
  }
  std::sort_heap(heap.begin(), heap.end(), better);  // now best first

  const float inv_t = 1.0f / params_.temperature;
  double total = 0.0;
  for (int32_t id : heap) {
    weights_[id] = weight_of(logits[id], max_logit, inv_t);
    total += weights_[id];
  }
  const size_t n =
      params_.top_p < 1.0f ? nucleus_length(heap, weights_, 0.0, total, params_.top_p) : heap.size();
  return keep_min_p(heap.first(n));
}

// Without top-k or top-p, the kept set is min-p's (everything when min_p = 0) and needs no normalizer,
// so only tokens near the top get a weight. The cut is first made on scaled logits, widened far beyond
// exp_nonpositive's error so that it drops no token of weight >= min_p; survivors are tested exactly.
std::span<int32_t> Sampler::keep_above_min_p(std::span<const float> logits, float max_logit) {
  const float inv_t = 1.0f / params_.temperature;
  const float min_p = params_.min_p;
  if (min_p <= 0.0f) {  // plain temperature sampling; this loop vectorizes, a gather through ids would not
    for (int32_t id = 0; id < vocab_size_; ++id) weights_[id] = weight_of(logits[id], max_logit, inv_t);
    std::iota(ids_.begin(), ids_.end(), 0);
    return ids_;
  }
  const float cutoff = std::log(min_p) - 1e-3f;
  // Branch-free compaction (slot written always, cursor moved by the condition): for flat distributions
  // whether a token passes is a coin flip. Locals, as an int32 store through ids_ could alias vocab_size_.
  int32_t* const ids = ids_.data();
  const int32_t vocab_size = vocab_size_;
  size_t near_top = 0;
  for (int32_t id = 0; id < vocab_size; ++id) {
    ids[near_top] = id;
    near_top += (logits[id] - max_logit) * inv_t >= cutoff;
  }
  size_t kept = 0;
  for (size_t i = 0; i < near_top; ++i) {
    const int32_t id = ids[i];
    weights_[id] = weight_of(logits[id], max_logit, inv_t);
    ids[kept] = id;
    kept += weights_[id] >= min_p;
  }
  return std::span(ids, kept);
}

// Top-p without top-k: weights for the whole vocabulary, for the normalizer. A histogram of scaled logits
// then gives the band B where the cumulative mass first reaches p: bands before B lie wholly inside the
// nucleus and bands after it wholly outside, so only band B's tokens get sorted.
std::span<int32_t> Sampler::keep_top_p(std::span<const float> logits, float max_logit) {
  const float inv_t = 1.0f / params_.temperature;
  const float min_p = params_.min_p;
  for (int32_t id = 0; id < vocab_size_; ++id) weights_[id] = weight_of(logits[id], max_logit, inv_t);
  const double total = sum_in_lanes(weights_);
  for (int32_t id = 0; id < vocab_size_; ++id) bands_[id] = band_of(logits[id], max_logit, inv_t);
  std::fill(band_mass_.begin(), band_mass_.end(), 0.0);
  for (int32_t id = 0; id < vocab_size_; ++id) band_mass_[bands_[id]] += weights_[id];
  size_t boundary_band = 0;
  double mass_before_boundary = 0.0;
  while (boundary_band + 1 < kBands &&
         !reaches(mass_before_boundary + band_mass_[boundary_band], total, params_.top_p)) {
    mass_before_boundary += band_mass_[boundary_band++];
  }

  // Tokens of earlier bands fill ids_ from the front, branch-free as above; the boundary band's are parked
  // at the back. The two never meet a filled slot: kept + (vocab - parked) <= the ids seen so far.
  int32_t* const ids = ids_.data();
  const uint16_t* const bands = bands_.data();
  const float* const weights = weights_.data();
  const int32_t vocab_size = vocab_size_;
  size_t kept = 0;
  size_t parked = ids_.size();
  for (int32_t id = 0; id < vocab_size; ++id) {
    ids[kept] = id;
    ids[parked - 1] = id;
    kept += (bands[id] < boundary_band) & (weights[id] >= min_p);  // `&`: && would branch
    parked -= bands[id] == boundary_band;
  }
  const std::span<int32_t> boundary(ids_.begin() + parked, ids_.end());
  std::sort(boundary.begin(), boundary.end(), ByLogitDesc{logits.data()});
  const size_t in_nucleus = nucleus_length(boundary, weights_, mass_before_boundary, total, params_.top_p);
  for (int32_t id : boundary.first(in_nucleus)) {  // ids_[kept] never overtakes the id being read
    if (weights_[id] >= min_p) ids_[kept++] = id;
  }
  return std::span(ids_.data(), kept);
}

std::span<int32_t> Sampler::keep_min_p(std::span<int32_t> ids) const {
  if (params_.min_p <= 0.0f) return ids;
  const auto end =
      std::remove_if(ids.begin(), ids.end(), [&](int32_t id) { return weights_[id] < params_.min_p; });
  return ids.first(static_cast<size_t>(end - ids.begin()));
}

// Inverse-CDF draw over the kept weights. The max token (weight 1) always survives, so `total` > 0. The
// walk skips whole blocks by their sums first: a token-by-token running sum is a serial chain.
int32_t Sampler::draw(std::span<const int32_t> kept) {
  constexpr size_t kBlock = 64;
  const double total = sum_of(kept, weights_);
  // 53 random bits -> a uniform double in [0, 1), the same on every standard library.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cum = 0.0;
  size_t start = 0;
  for (; start + kBlock < kept.size(); start += kBlock) {
    const double block = sum_of(kept.subspan(start, kBlock), weights_);
    if (u < cum + block) break;
    cum += block;
  }
  int32_t last_positive = kept.front();
  for (int32_t id : kept.subspan(start)) {
    if (weights_[id] <= 0.0f) continue;
    cum += weights_[id];
    if (u < cum) return id;
    last_positive = id;
  }
  return last_positive;  // u landed past the end through rounding
}

}  // namespace ge::runtime
