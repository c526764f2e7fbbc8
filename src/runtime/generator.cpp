#include "runtime/generator.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace ge::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Holds back the tail of the generated text that could still turn into a stop string, so that a stop
// string is never printed, even when it arrives split over several tokens.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stop) : stop_(stop) {}

  // Adds text; returns what can be printed now, and sets `stopped` when a stop string completed.
  std::string push(std::string_view text, bool& stopped) {
    pending_ += text;
    size_t cut = std::string::npos;
    for (const auto& s : stop_)
      if (!s.empty()) cut = std::min(cut, pending_.find(s));
    if (cut != std::string::npos) {
      stopped = true;
      std::string out = pending_.substr(0, cut);
      pending_.clear();
      return out;
    }
    const size_t keep = longest_stop_prefix_suffix();
    std::string out = pending_.substr(0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return out;
  }
  std::string flush() { return std::exchange(pending_, {}); }

 private:
  // Length of the longest end of pending_ that is a proper prefix of some stop string.
  size_t longest_stop_prefix_suffix() const {
    size_t best = 0;
    for (const auto& s : stop_) {
      if (s.empty()) continue;
      for (size_t n = std::min(s.size() - 1, pending_.size()); n > best; --n)
        if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) best = n;
    }
    return best;
  }

  const std::vector<std::string>& stop_;
  std::string pending_;
};

}  // namespace

Generator::Generator(gemma::Model& model, const Tokenizer& tokenizer, kernels::ThreadPool& pool)
    : model_(model), tokenizer_(tokenizer), pool_(pool), logits_(model.config().vocab_size) {}

std::span<float> Generator::ingest(Slot& slot, std::span<const int32_t> prompt, GenerateStats* stats) {
  if (prompt.empty()) throw std::invalid_argument("empty prompt: nothing to run");
  if (static_cast<int64_t>(prompt.size()) > slot.cache.context())
    throw std::runtime_error("prompt of " + std::to_string(prompt.size()) + " tokens exceeds the context of " +
                             std::to_string(slot.cache.context()) + " (raise --ctx)");
  // Reuse the cached prefix, but always run at least the last prompt token to get its logits.
  size_t keep = std::mismatch(slot.tokens.begin(), slot.tokens.end(), prompt.begin(), prompt.end()).first -
                slot.tokens.begin();
  keep = std::min(keep, prompt.size() - 1);
  if (!model_.can_rewind(slot.cache, static_cast<int64_t>(slot.tokens.size()), static_cast<int64_t>(keep))) keep = 0;
  slot.tokens.resize(keep);

  const auto start = Clock::now();
  const auto rest = prompt.subspan(keep);
  model_.forward(rest, static_cast<int64_t>(keep), slot.cache, pool_, logits_.data(), false);
  slot.tokens.insert(slot.tokens.end(), rest.begin(), rest.end());
  if (stats) {
    stats->prompt_tokens = static_cast<int64_t>(rest.size());
    stats->reused_tokens = static_cast<int64_t>(keep);
    stats->prompt_seconds = seconds_since(start);
  }
  return logits_;
}

std::span<float> Generator::step(Slot& slot, int32_t token) {
  const int32_t one[1] = {token};
  model_.forward(one, static_cast<int64_t>(slot.tokens.size()), slot.cache, pool_, logits_.data(), false);
  slot.tokens.push_back(token);
  return logits_;
}

GenerateStats Generator::generate(Slot& slot, std::span<const int32_t> prompt, Sampler& sampler,
                                  const GenerateOptions& options, const TextSink& sink) {
  GenerateStats stats;
  std::span<float> logits = ingest(slot, prompt, &stats);
  StreamDecoder decoder(tokenizer_);
  StopFilter filter(options.stop);
  const auto start = Clock::now();
  for (;;) {
    if (options.max_new_tokens >= 0 && stats.generated_tokens >= options.max_new_tokens) {
      stats.stop = StopReason::kMaxTokens;
      break;
    }
    const int32_t token = sampler.sample(logits, slot.tokens);
    if (std::find(options.eos_ids.begin(), options.eos_ids.end(), token) != options.eos_ids.end()) {
      stats.stop = StopReason::kEos;
      break;
    }
    ++stats.generated_tokens;
    bool stopped = false;
    const std::string text = filter.push(decoder.push(token), stopped);
    if (!text.empty() && !sink(text)) {
      stats.stop = StopReason::kCancelled;
      break;
    }
    if (stopped) {
      stats.stop = StopReason::kStopString;
      break;
    }
    if (static_cast<int64_t>(slot.tokens.size()) >= slot.cache.context()) {
      stats.stop = StopReason::kContextFull;
      break;
    }
    logits = step(slot, token);
  }
  if (stats.stop != StopReason::kStopString && stats.stop != StopReason::kCancelled) {
    bool stopped = false;
    const std::string tail = filter.push(decoder.flush(), stopped) + (stopped ? "" : filter.flush());
    if (!tail.empty()) sink(tail);
  }
  stats.decode_seconds = seconds_since(start);
  return stats;
}

}  // namespace ge::runtime
