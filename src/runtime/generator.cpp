#include "runtime/generator.h"

#include <algorithm>
#include <cstring>
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

uint64_t image_digest(std::span<const float> pixels) {
  // FNV-1a over the bytes: a cache key, not a defence against crafted collisions.
  uint64_t h = 1469598103934665603ull;
  for (const float v : pixels) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    for (int i = 0; i < 4; ++i) h = (h ^ ((bits >> (8 * i)) & 0xFF)) * 1099511628211ull;
  }
  return h | 1;
}

std::vector<ImageRun> find_image_runs(std::span<const int32_t> prompt, int32_t image_token, int64_t tokens_per_image,
                                      size_t n_images) {
  std::vector<ImageRun> runs;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] != image_token) continue;
    if (i == 0 || prompt[i - 1] != image_token) runs.push_back({static_cast<int64_t>(i), 0});
    ++runs.back().count;
  }
  if (runs.size() != n_images)
    throw std::invalid_argument("the prompt has " + std::to_string(runs.size()) +
                                " image(s) (runs of <image_soft_token>) but " + std::to_string(n_images) +
                                " image(s) were given");
  for (const ImageRun& r : runs)
    if (r.count != tokens_per_image)
      throw std::invalid_argument("the image at prompt position " + std::to_string(r.offset) + " has " +
                                  std::to_string(r.count) + " <image_soft_token> ids; an image is " +
                                  std::to_string(tokens_per_image));
  return runs;
}

std::vector<ImageRun> Generator::image_runs(std::span<const int32_t> prompt, size_t n_images) const {
  if (!encoder_) {
    if (n_images) throw std::invalid_argument("this model reads no images (it has no vision tower)");
    return {};
  }
  return find_image_runs(prompt, encoder_->config().image_token_id, encoder_->config().mm_tokens_per_image, n_images);
}

std::span<float> Generator::ingest(Slot& slot, std::span<const int32_t> prompt, GenerateStats* stats,
                                   std::span<const PromptImage> images) {
  if (prompt.empty()) throw std::invalid_argument("empty prompt: nothing to run");
  if (static_cast<int64_t>(prompt.size()) > slot.cache.context())
    throw std::runtime_error("prompt of " + std::to_string(prompt.size()) + " tokens exceeds the context of " +
                             std::to_string(slot.cache.context()) + " (raise --ctx)");
  const std::vector<ImageRun> runs = image_runs(prompt, images.size());
  std::vector<uint64_t> digests(prompt.size(), 0);
  for (size_t i = 0; i < runs.size(); ++i)
    std::fill_n(digests.begin() + runs[i].offset, runs[i].count, images[i].digest);

  // Reuse the cached prefix, but always run at least the last prompt token to get its logits, and never
  // keep part of an image: its tokens attend to each other, so they run together.
  size_t keep = 0;
  while (keep < slot.tokens.size() && keep < prompt.size() && slot.tokens[keep] == prompt[keep] &&
         slot.image_digests[keep] == digests[keep])
    ++keep;
  keep = std::min(keep, prompt.size() - 1);
  for (const ImageRun& r : runs)
    if (r.offset < static_cast<int64_t>(keep) && static_cast<int64_t>(keep) < r.offset + r.count) keep = r.offset;
  if (!model_.can_rewind(slot.cache, static_cast<int64_t>(slot.tokens.size()), static_cast<int64_t>(keep))) keep = 0;
  slot.tokens.resize(keep);
  slot.image_digests.resize(keep);

  const auto start = Clock::now();
  std::vector<gemma::EmbeddingBlock> blocks;
  const int64_t hidden = model_.config().hidden_size;
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].offset >= static_cast<int64_t>(keep)) blocks.push_back({runs[i].offset - static_cast<int64_t>(keep), runs[i].count, nullptr});
  if (!blocks.empty()) {
    features_.resize(blocks.size() * blocks.front().count * hidden);
    const size_t first = runs.size() - blocks.size();
    for (size_t b = 0; b < blocks.size(); ++b) {
      blocks[b].embeddings = features_.data() + b * blocks[b].count * hidden;
      encoder_->encode(images[first + b].pixels, pool_, features_.data() + b * blocks[b].count * hidden);
    }
  }
  const double image_seconds = seconds_since(start);
  const auto rest = prompt.subspan(keep);
  model_.forward(rest, static_cast<int64_t>(keep), slot.cache, pool_, logits_.data(), false, nullptr, blocks);
  slot.tokens.insert(slot.tokens.end(), rest.begin(), rest.end());
  slot.image_digests.insert(slot.image_digests.end(), digests.begin() + static_cast<int64_t>(keep), digests.end());
  if (stats) {
    stats->prompt_tokens = static_cast<int64_t>(rest.size());
    stats->reused_tokens = static_cast<int64_t>(keep);
    stats->images_encoded = static_cast<int64_t>(blocks.size());
    stats->image_seconds = image_seconds;
    stats->prompt_seconds = seconds_since(start) - image_seconds;
  }
  return logits_;
}

std::span<float> Generator::step(Slot& slot, int32_t token) {
  const int32_t one[1] = {token};
  model_.forward(one, static_cast<int64_t>(slot.tokens.size()), slot.cache, pool_, logits_.data(), false);
  slot.tokens.push_back(token);
  slot.image_digests.push_back(0);
  return logits_;
}

GenerateStats Generator::generate(Slot& slot, std::span<const int32_t> prompt, Sampler& sampler,
                                  const GenerateOptions& options, const TextSink& sink,
                                  std::span<const PromptImage> images) {
  GenerateStats stats;
  std::span<float> logits = ingest(slot, prompt, &stats, images);
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
