#include "runtime/generator.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace ge::runtime {

using Clock = std::chrono::steady_clock;

std::string StopFilter::push(std::string_view text, bool& stopped) {
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

// Length of the longest end of pending_ that is a proper prefix of some stop string.
size_t StopFilter::longest_stop_prefix_suffix() const {
  size_t best = 0;
  for (const auto& s : stop_) {
    if (s.empty()) continue;
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > best; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) best = n;
  }
  return best;
}

Completion::Completion(const Tokenizer& tokenizer, Sampler& sampler, const GenerateOptions& options)
    : sampler_(sampler), options_(options), decoder_(tokenizer), filter_(options.stop) {}

std::optional<int32_t> Completion::next(std::span<float> logits, const Slot& slot, const TextSink& sink) {
  if (options_.max_new_tokens >= 0 && stats_.generated_tokens >= options_.max_new_tokens) {
    finish(StopReason::kMaxTokens, sink);
    return std::nullopt;
  }
  const int32_t token = sampler_.sample(logits, slot.tokens);
  if (std::find(options_.eos_ids.begin(), options_.eos_ids.end(), token) != options_.eos_ids.end()) {
    finish(StopReason::kEos, sink);
    return std::nullopt;
  }
  ++stats_.generated_tokens;
  bool stopped = false;
  const std::string text = filter_.push(decoder_.push(token), stopped);
  if (!text.empty() && !sink(text)) {
    stats_.stop = StopReason::kCancelled;
    return std::nullopt;
  }
  if (stopped) {
    stats_.stop = StopReason::kStopString;
    return std::nullopt;
  }
  if (static_cast<int64_t>(slot.tokens.size()) >= slot.cache.context()) {
    finish(StopReason::kContextFull, sink);
    return std::nullopt;
  }
  return token;
}

void Completion::finish(StopReason reason, const TextSink& sink) {
  stats_.stop = reason;
  bool stopped = false;
  const std::string tail = filter_.push(decoder_.flush(), stopped) + (stopped ? "" : filter_.flush());
  if (!tail.empty()) sink(tail);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Generator::Generator(models::CausalLM& model, const Tokenizer& tokenizer, kernels::ThreadPool& pool,
                     int boundaries_per_slot)
    : model_(model),
      tokenizer_(tokenizer),
      pool_(pool),
      boundaries_per_slot_(boundaries_per_slot),
      logits_(model.shape().vocab_size) {
  rows_.reserve(static_cast<size_t>(model.chunk_capacity()));
}

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

std::vector<ImageRun> find_image_runs(std::span<const int32_t> prompt, int32_t image_token,
                                      int64_t tokens_per_image, size_t n_images) {
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

Prompt Generator::prepare(std::vector<int32_t> tokens, std::span<const PromptImage> images) const {
  if (tokens.empty()) throw std::invalid_argument("empty prompt: nothing to run");
  Prompt p;
  if (!encoder_ && !images.empty())
    throw std::invalid_argument("this model reads no images (it has no vision tower)");
  if (encoder_)
    p.runs = find_image_runs(tokens, encoder_->config().image_token_id,
                             encoder_->config().mm_tokens_per_image, images.size());
  p.digests.assign(tokens.size(), 0);
  for (size_t i = 0; i < p.runs.size(); ++i)
    std::fill_n(p.digests.begin() + p.runs[i].offset, p.runs[i].count, images[i].digest);
  p.tokens = std::move(tokens);
  p.images.assign(images.begin(), images.end());
  return p;
}

int64_t Generator::shared_prefix(const Slot& slot, const Prompt& prompt) const {
  const size_t n = std::min(slot.tokens.size(), prompt.tokens.size());
  size_t keep = 0;
  while (keep < n && slot.tokens[keep] == prompt.tokens[keep] &&
         slot.image_digests[keep] == prompt.digests[keep])
    ++keep;
  // Always run the last prompt token for its logits, and never keep part of an image: its tokens attend
  // to each other, so they run together.
  keep = std::min(keep, prompt.tokens.size() - 1);
  for (const ImageRun& r : prompt.runs)
    if (r.offset < static_cast<int64_t>(keep) && static_cast<int64_t>(keep) < r.offset + r.count)
      keep = r.offset;
  return static_cast<int64_t>(keep);
}

int Generator::boundary_for(const Slot& slot, int64_t shared, int64_t& keep) const {
  const auto length = static_cast<int64_t>(slot.tokens.size());
  keep = shared;
  if (model_.can_rewind(slot.cache, length, shared)) return -1;
  // A boundary at b (b <= length: its positions are still the slot's) restores the rings as they were at
  // b; from there the slot rewinds to min(shared, b) as it could have then.
  int best = -2;
  keep = 0;
  for (size_t i = 0; i < slot.boundaries.size(); ++i) {
    const int64_t b = slot.boundaries[i].length, k = std::min(shared, b);
    if (b <= length && model_.can_rewind(slot.cache, b, k) && k > keep) {
      keep = k;
      best = static_cast<int>(i);
    }
  }
  return best;
}

int64_t Generator::reusable(const Slot& slot, const Prompt& prompt) const {
  int64_t keep = 0;
  return boundary_for(slot, shared_prefix(slot, prompt), keep) == -2 ? 0 : keep;
}

Prefill Generator::begin(Slot& slot, const Prompt& prompt, GenerateStats* stats) {
  if (static_cast<int64_t>(prompt.tokens.size()) > slot.cache.context())
    throw std::invalid_argument("prompt of " + std::to_string(prompt.tokens.size()) +
                                " tokens exceeds the context of " + std::to_string(slot.cache.context()) +
                                " (raise --ctx)");
  int64_t keep = 0;
  const int boundary = boundary_for(slot, shared_prefix(slot, prompt), keep);
  if (boundary >= 0) slot.cache.restore_rings(slot.boundaries[boundary].rings);
  if (boundary == -2) keep = 0;
  slot.tokens.resize(keep);
  slot.image_digests.resize(keep);
  // Boundaries past the kept prefix describe a sequence the slot no longer holds.
  std::erase_if(slot.boundaries, [&](const Slot::Boundary& b) { return b.length > keep; });

  const auto start = Clock::now();
  Prefill p;
  p.prompt = &prompt;
  p.next = keep;
  const int64_t hidden = model_.shape().hidden_size;
  size_t first = 0;
  while (first < prompt.runs.size() && prompt.runs[first].offset < keep) ++first;
  const size_t count = prompt.runs.size() - first;
  if (count) p.features.resize(count * static_cast<size_t>(prompt.runs[first].count * hidden));
  float* out = p.features.data();
  for (size_t i = first; i < prompt.runs.size(); ++i) {
    encoder_->encode(prompt.images[i].pixels, pool_, out);
    p.blocks.push_back({prompt.runs[i].offset, prompt.runs[i].count, out});
    out += prompt.runs[i].count * hidden;
  }
  if (stats) {
    stats->prompt_tokens = static_cast<int64_t>(prompt.tokens.size()) - keep;
    stats->reused_tokens = keep;
    stats->images_encoded = static_cast<int64_t>(count);
    stats->image_seconds = seconds_since(start);
  }
  return p;
}

bool Generator::advance(Slot& slot, Prefill& p, int64_t max_tokens, float* logits) {
  const auto& tokens = p.prompt->tokens;
  const auto total = static_cast<int64_t>(tokens.size());
  const int64_t end = models::step_end(p.blocks, p.next, std::min(total, p.next + max_tokens));
  std::vector<models::EmbeddingBlock> local;
  for (const models::EmbeddingBlock& b : p.blocks)
    if (b.offset >= p.next && b.offset < end) local.push_back({b.offset - p.next, b.count, b.embeddings});
  const auto run = std::span(tokens).subspan(static_cast<size_t>(p.next), static_cast<size_t>(end - p.next));
  model_.forward(run, p.next, slot.cache, pool_, end == total ? logits : nullptr, false, nullptr, local);
  slot.tokens.insert(slot.tokens.end(), run.begin(), run.end());
  slot.image_digests.insert(slot.image_digests.end(), p.prompt->digests.begin() + p.next,
                            p.prompt->digests.begin() + end);
  p.next = end;
  if (!p.done()) return false;
  save_boundary(slot);
  return true;
}

void Generator::save_boundary(Slot& slot) {
  if (boundaries_per_slot_ <= 0) return;
  const auto length = static_cast<int64_t>(slot.tokens.size());
  // Only a slot whose sliding layers drop keys needs snapshots.
  if (model_.can_rewind(slot.cache, slot.cache.context(), 0)) return;
  if (!slot.boundaries.empty() && slot.boundaries.back().length == length) return;
  Slot::Boundary b;
  if (static_cast<int>(slot.boundaries.size()) >= boundaries_per_slot_) {
    b = std::move(slot.boundaries.front());  // reuse the oldest one's buffers
    slot.boundaries.erase(slot.boundaries.begin());
  }
  b.length = length;
  slot.cache.save_rings(b.rings);
  slot.boundaries.push_back(std::move(b));
}

std::span<float> Generator::ingest(Slot& slot, const Prompt& prompt, GenerateStats* stats) {
  Prefill p = begin(slot, prompt, stats);
  const auto start = Clock::now();
  while (!advance(slot, p, model_.max_chunk(), logits_.data())) {
  }
  if (stats) stats->prompt_seconds = seconds_since(start);
  return logits_;
}

std::span<float> Generator::ingest(Slot& slot, std::span<const int32_t> prompt, GenerateStats* stats,
                                   std::span<const PromptImage> images) {
  const Prompt p = prepare(std::vector<int32_t>(prompt.begin(), prompt.end()), images);
  return ingest(slot, p, stats);
}

void Generator::decode(std::span<Slot* const> slots, std::span<const int32_t> tokens, float* logits) {
  rows_.clear();
  for (size_t i = 0; i < slots.size(); ++i)
    rows_.push_back({tokens[i], static_cast<int64_t>(slots[i]->tokens.size()), &slots[i]->cache});
  model_.decode(rows_, pool_, logits);
  for (size_t i = 0; i < slots.size(); ++i) {
    slots[i]->tokens.push_back(tokens[i]);
    slots[i]->image_digests.push_back(0);
  }
}

GenerateStats Generator::generate(Slot& slot, std::span<const int32_t> prompt, Sampler& sampler,
                                  const GenerateOptions& options, const TextSink& sink,
                                  std::span<const PromptImage> images) {
  Completion completion(tokenizer_, sampler, options);
  GenerateStats& stats = completion.stats();
  std::span<float> logits = ingest(slot, prompt, &stats, images);
  const auto start = Clock::now();
  Slot* const one[1] = {&slot};
  while (const auto token = completion.next(logits, slot, sink))
    decode(one, std::span(&*token, 1), logits.data());
  stats.decode_seconds = seconds_since(start);
  return stats;
}

}  // namespace ge::runtime
