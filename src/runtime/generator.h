// The generation loop. A Slot is one sequence (its KV cache and the tokens the cache holds); the
// Generator runs prompts and sampled tokens of a slot through the model. Several slots can share one
// model and one Generator; a server will interleave them.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kernels/thread_pool.h"
#include "models/causal_lm.h"
#include "models/siglip/model.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace ge::runtime {

struct Slot {
  Slot(const models::CausalLM& model, int64_t context, DType kv_type = DType::F32)
      : cache(model.make_cache(context, kv_type)) {
    tokens.reserve(static_cast<size_t>(context));
    image_digests.reserve(static_cast<size_t>(context));
  }
  nn::KVCache cache;
  std::vector<int32_t> tokens;  // what `cache` holds, position by position
  // Per position: the digest of the image whose soft token it holds, 0 for text. Soft tokens all have
  // the same id, so the cached prefix is reused only where the images match too.
  std::vector<uint64_t> image_digests;
  // The sliding layers' rings as they were where recent prompts ended (turn boundaries), oldest first:
  // a later prompt that shares the sequence only up to near such a point (a regenerated answer, an edited
  // or differently tokenized one) rewinds to it, although the sequence went on far past the window since.
  struct Boundary {
    int64_t length = 0;
    nn::KVCache::RingSnapshot rings;
  };
  std::vector<Boundary> boundaries;
};

// Seconds from `start` to now (the stats of generation and serving).
double seconds_since(std::chrono::steady_clock::time_point start);

// One image of a prompt as the vision encoder reads it: the processor's pixel values of one image or
// crop [channels, size, size], and their digest.
struct PromptImage {
  const float* pixels = nullptr;
  uint64_t digest = 0;
};
// A digest of pixel values (never 0): equal images give equal digests.
uint64_t image_digest(std::span<const float> pixels);

// A run of <image_soft_token> ids in a prompt: where one image's features go.
struct ImageRun {
  int64_t offset = 0, count = 0;
};
// The runs of `image_token` in `prompt`; throws unless there are exactly `n_images`, each of
// `tokens_per_image` ids.
std::vector<ImageRun> find_image_runs(std::span<const int32_t> prompt, int32_t image_token,
                                      int64_t tokens_per_image, size_t n_images);

// A prompt as the generator runs it: ids, the images its <image_soft_token> runs stand for, and per position
// the digest of the image it belongs to (0 for text).
struct Prompt {
  std::vector<int32_t> tokens;
  std::vector<PromptImage> images;
  std::vector<ImageRun> runs;
  std::vector<uint64_t> digests;
};

// A prompt on its way into a slot, run a step at a time (a server interleaves steps of several slots).
struct Prefill {
  const Prompt* prompt = nullptr;
  int64_t next = 0;                           // first prompt position not in the cache yet
  std::vector<models::EmbeddingBlock> blocks;  // images still to run, offsets from the prompt's start
  std::vector<float> features;                // their soft-token embeddings
  bool done() const { return next == static_cast<int64_t>(prompt->tokens.size()); }
};

struct GenerateOptions {
  int64_t max_new_tokens = -1;    // < 0: until EOS or the context is full
  std::vector<int32_t> eos_ids;   // any of them ends the answer (not printed)
  std::vector<std::string> stop;  // stop strings (not printed)
};

enum class StopReason { kEos, kStopString, kMaxTokens, kContextFull, kCancelled };

struct GenerateStats {
  int64_t prompt_tokens = 0;   // tokens actually run (the cached prefix excluded)
  int64_t reused_tokens = 0;   // prompt tokens found in the cache already
  int64_t images_encoded = 0;  // images run through the vision encoder (those in the cache excluded)
  double image_seconds = 0;
  double prompt_seconds = 0;
  int64_t generated_tokens = 0;
  double decode_seconds = 0;
  StopReason stop = StopReason::kEos;
};

// Receives text as it becomes printable; returning false cancels generation.
using TextSink = std::function<bool(std::string_view text)>;

// Holds back the tail of the generated text that could still turn into a stop string, so that a stop
// string is never printed, even when it arrives split over several tokens.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stop) : stop_(stop) {}
  // Adds text; returns what can be printed now, and sets `stopped` when a stop string completed.
  std::string push(std::string_view text, bool& stopped);
  std::string flush() { return std::exchange(pending_, {}); }

 private:
  size_t longest_stop_prefix_suffix() const;

  const std::vector<std::string>& stop_;
  std::string pending_;
};

// The answer side of one request: samples each next token, decodes it to text, holds back what could
// still become a stop string, and says when to stop.
class Completion {
 public:
  Completion(const Tokenizer& tokenizer, Sampler& sampler, const GenerateOptions& options);

  // Samples from the logits of the slot's last position. Returns the token to run next, or nothing once
  // the answer ended (stats().stop says why; the tail of the text is then sent).
  std::optional<int32_t> next(std::span<float> logits, const Slot& slot, const TextSink& sink);

  GenerateStats& stats() { return stats_; }

 private:
  void finish(StopReason reason, const TextSink& sink);

  Sampler& sampler_;
  const GenerateOptions& options_;
  StreamDecoder decoder_;
  StopFilter filter_;
  GenerateStats stats_;
};

class Generator {
 public:
  // boundaries_per_slot: ring snapshots each slot keeps (see Slot::Boundary).
  Generator(models::CausalLM& model, const Tokenizer& tokenizer, kernels::ThreadPool& pool,
            int boundaries_per_slot = 2);

  // For prompts with images: each run of the encoder's <image_soft_token> ids in a prompt takes the
  // features of the next image, in order.
  void set_vision_encoder(siglip::Gemma3VisionEncoder* encoder) { encoder_ = encoder; }

  // Checks a prompt and its images against the model; throws std::invalid_argument naming what is wrong.
  Prompt prepare(std::vector<int32_t> tokens, std::span<const PromptImage> images = {}) const;

  // Prompt positions `slot` can keep: the cached prefix the prompt shares, reached directly or through a
  // boundary snapshot; never the last prompt position (its logits are needed) or part of an image.
  int64_t reusable(const Slot& slot, const Prompt& prompt) const;

  // Rewinds `slot` to what it can keep of the prompt (restoring a boundary snapshot where that is how)
  // and encodes the images not in the cache; then advance() runs the rest.
  Prefill begin(Slot& slot, const Prompt& prompt, GenerateStats* stats = nullptr);
  // Runs up to `max_tokens` more prompt tokens (more when an image block must not be split). Once the
  // prompt is in, writes the logits of its last position and snapshots the rings; returns whether it is.
  bool advance(Slot& slot, Prefill& prefill, int64_t max_tokens, float* logits);

  // One token for each slot, in one forward pass; logits [slots, vocab].
  void decode(std::span<Slot* const> slots, std::span<const int32_t> tokens, float* logits);

  // Makes `slot` hold exactly `prompt` (reusing the longest cached prefix it can: an image already in the
  // cache is not encoded again) and returns the logits of the last prompt position. Throws when the
  // prompt is empty or exceeds the context, or its image blocks do not match `images`.
  std::span<float> ingest(Slot& slot, std::span<const int32_t> prompt, GenerateStats* stats = nullptr,
                          std::span<const PromptImage> images = {});
  std::span<float> ingest(Slot& slot, const Prompt& prompt, GenerateStats* stats = nullptr);

  // Prompt, then sampled tokens until a stop condition; streams decoded text to `sink`.
  GenerateStats generate(Slot& slot, std::span<const int32_t> prompt, Sampler& sampler,
                         const GenerateOptions& options, const TextSink& sink,
                         std::span<const PromptImage> images = {});

 private:
  // How much of the slot's sequence the prompt shares, capped as reusable() says.
  int64_t shared_prefix(const Slot& slot, const Prompt& prompt) const;
  // Sets `keep` to what the slot can keep of `shared` positions and returns how: directly (-1), through
  // the boundary of that index, or not at all (-2, keep = 0).
  int boundary_for(const Slot& slot, int64_t shared, int64_t& keep) const;
  void save_boundary(Slot& slot);

  models::CausalLM& model_;
  const Tokenizer& tokenizer_;
  kernels::ThreadPool& pool_;
  int boundaries_per_slot_;
  siglip::Gemma3VisionEncoder* encoder_ = nullptr;
  std::vector<float> logits_;
  std::vector<models::DecodeRow> rows_;
};

}  // namespace ge::runtime
