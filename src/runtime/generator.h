// The generation loop. A Slot is one sequence (its KV cache and the tokens the cache holds); the
// Generator runs prompts and sampled tokens of a slot through the model. Several slots can share one
// model and one Generator; a server will interleave them.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kernels/thread_pool.h"
#include "models/gemma/model.h"
#include "models/siglip/model.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace ge::runtime {

struct Slot {
  Slot(const gemma::Model& model, int64_t context, DType kv_type = DType::F32)
      : cache(model.make_cache(context, kv_type)) {
    tokens.reserve(static_cast<size_t>(context));
    image_digests.reserve(static_cast<size_t>(context));
  }
  nn::KVCache cache;
  std::vector<int32_t> tokens;  // what `cache` holds, position by position
  // Per position: the digest of the image whose soft token it holds, 0 for text. Soft tokens all have
  // the same id, so the cached prefix is reused only where the images match too.
  std::vector<uint64_t> image_digests;
};

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
std::vector<ImageRun> find_image_runs(std::span<const int32_t> prompt, int32_t image_token, int64_t tokens_per_image,
                                      size_t n_images);

struct GenerateOptions {
  int64_t max_new_tokens = -1;        // < 0: until EOS or the context is full
  std::vector<int32_t> eos_ids;       // any of them ends the answer (not printed)
  std::vector<std::string> stop;      // stop strings (not printed)
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

class Generator {
 public:
  Generator(gemma::Model& model, const Tokenizer& tokenizer, kernels::ThreadPool& pool);

  // For prompts with images: each run of the encoder's <image_soft_token> ids in a prompt takes the
  // features of the next image, in order.
  void set_vision_encoder(siglip::Gemma3VisionEncoder* encoder) { encoder_ = encoder; }

  // Makes `slot` hold exactly `prompt` (reusing the longest cached prefix it can: an image already in the
  // cache is not encoded again) and returns the logits of the last prompt position. Throws when the
  // prompt is empty or exceeds the context, or its image blocks do not match `images`.
  std::span<float> ingest(Slot& slot, std::span<const int32_t> prompt, GenerateStats* stats = nullptr,
                          std::span<const PromptImage> images = {});

  // Prompt, then sampled tokens until a stop condition; streams decoded text to `sink`.
  GenerateStats generate(Slot& slot, std::span<const int32_t> prompt, Sampler& sampler, const GenerateOptions& options,
                         const TextSink& sink, std::span<const PromptImage> images = {});

 private:
  std::vector<ImageRun> image_runs(std::span<const int32_t> prompt, size_t n_images) const;
  std::span<float> step(Slot& slot, int32_t token);

  gemma::Model& model_;
  const Tokenizer& tokenizer_;
  kernels::ThreadPool& pool_;
  siglip::Gemma3VisionEncoder* encoder_ = nullptr;
  std::vector<float> logits_;
  std::vector<float> features_;  // soft-token embeddings of the images a prompt encodes
};

}  // namespace ge::runtime
