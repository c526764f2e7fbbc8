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
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace ge::runtime {

struct Slot {
  Slot(const gemma::Model& model, int64_t context, DType kv_type = DType::F32)
      : cache(model.make_cache(context, kv_type)) {}
  nn::KVCache cache;
  std::vector<int32_t> tokens;  // what `cache` holds, position by position
};

struct GenerateOptions {
  int64_t max_new_tokens = -1;        // < 0: until EOS or the context is full
  std::vector<int32_t> eos_ids;       // any of them ends the answer (not printed)
  std::vector<std::string> stop;      // stop strings (not printed)
};

enum class StopReason { kEos, kStopString, kMaxTokens, kContextFull, kCancelled };

struct GenerateStats {
  int64_t prompt_tokens = 0;   // tokens actually run (the cached prefix excluded)
  int64_t reused_tokens = 0;   // prompt tokens found in the cache already
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

  // Makes `slot` hold exactly `prompt` (reusing the longest cached prefix it can) and returns the
  // logits of the last prompt position. Throws when the prompt is empty or exceeds the context.
  std::span<float> ingest(Slot& slot, std::span<const int32_t> prompt, GenerateStats* stats = nullptr);

  // Prompt, then sampled tokens until a stop condition; streams decoded text to `sink`.
  GenerateStats generate(Slot& slot, std::span<const int32_t> prompt, Sampler& sampler, const GenerateOptions& options,
                         const TextSink& sink);

 private:
  std::span<float> step(Slot& slot, int32_t token);

  gemma::Model& model_;
  const Tokenizer& tokenizer_;
  kernels::ThreadPool& pool_;
  std::vector<float> logits_;
};

}  // namespace ge::runtime
