// What the runtime (generation loop, serving engine, CLI) asks of a text decoder, whatever its family: a
// forward pass over a prompt chunk, a batched decode step, a KV cache to fill, and a few facts about its
// shape. Gemma 1/2/3 (models/gemma) and Gemma 3n (models/gemma3n) implement it; the runtime never sees
// which one it drives.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "kernels/matmul.h"
#include "kernels/thread_pool.h"
#include "nn/kv_cache.h"
#include "tensor/dtype.h"

namespace ge::models {

// Called with the residual stream: index 0 after the embedding, i + 1 after layer i; rows are positions
// [start, start + n_tokens) (Gemma 3n: the AltUp streams, [altup_num_inputs, n_tokens, hidden]).
using HiddenObserver =
    std::function<void(int64_t index, const float* hidden, int64_t start, int64_t n_tokens)>;

// Embeddings that replace those of a run of tokens (an image's soft tokens, Gemma3ForConditionalGeneration)
// and make the run one block whose tokens attend to each other both ways: tokens [offset, offset + count)
// of a forward call read rows of `embeddings` [count, hidden] (not scaled) instead of the embedding table.
struct EmbeddingBlock {
  int64_t offset = 0;
  int64_t count = 0;
  const float* embeddings = nullptr;
};

// Where a forward step that starts at token `begin` and may run up to `limit` ends: before a block it would
// cut, or after the block when one opens the step (a block's tokens attend to each other: they run together).
int64_t step_end(std::span<const EmbeddingBlock> blocks, int64_t begin, int64_t limit);

// One sequence's next token in a batched decode step: the token, its position and the sequence's cache.
struct DecodeRow {
  int32_t token = 0;
  int64_t position = 0;
  nn::KVCache* cache = nullptr;
};

// sqrt(width) rounded to bf16: the scale transformers multiplies Gemma's embedding rows by (it casts it to
// the bf16 weights' dtype), which GGUF files of the same weights get too.
float embedding_scale(int64_t width);

// Errors every model raises alike: a step past the cache's context; decode rows with ids outside the
// vocabulary, past their context, or sharing a cache.
void check_context(const nn::KVCache& cache, int64_t start_pos, int64_t n_tokens);
void check_decode_rows(std::span<const DecodeRow> rows, int64_t vocab_size);

// Whether `cache`, filled up to `length` positions, can be rewound to `keep` and extended from there: a
// layer keeping a ring (capacity below the context: a sliding layer) holds capacity - window positions
// beyond its window.
bool can_rewind(const nn::KVCache& cache, int64_t sliding_window, int64_t length, int64_t keep);

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual const char* family_name() const = 0;  // "gemma3", "gemma3n", ...
  struct Shape {
    int64_t vocab_size = 0;   // logits per position
    int64_t hidden_size = 0;  // width of an EmbeddingBlock's rows
    int64_t num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
    int64_t sliding_window = 0;  // 0: every layer global
    int64_t max_position_embeddings = 0;
  };
  virtual Shape shape() const = 0;
  // The formats of the matrices, most frequent first, joined by '+' ("Q5_0+Q8_0+Q4_K+Q6_K").
  virtual std::string matrix_formats() const = 0;
  virtual int64_t parameter_count() const = 0;  // of the text model, the tied embedding counted once
  // Bytes of weights one decode step reads: every matrix it multiplies by (the LM head included), not the
  // embedding tables it reads a row of. The decode roofline is the read bandwidth over this.
  virtual size_t weight_bytes_per_token() const = 0;

  virtual int64_t max_chunk() const = 0;  // most tokens of a prompt run through one forward step
  // Most tokens one forward step holds: max_chunk, or a whole image block when that is longer.
  virtual int64_t chunk_capacity() const = 0;

  // Precision of the matmuls of multi-token chunks (prompt processing) and of single-token decode steps;
  // both exact unless set. kReducedActivations rounds activations as llama.cpp does; it readies the layers
  // for it first (quantized matrices are repacked once).
  virtual void set_prefill_precision(kernels::Precision p) = 0;
  virtual void set_decode_precision(kernels::Precision p) = 0;
  // Readies every layer for kReducedActivations, the slow part of loading a quantized model;
  // `progress(done, total)` follows each layer.
  using Progress = std::function<void(int64_t done, int64_t total)>;
  virtual void prepare_reduced_activations(const Progress& progress = {}) = 0;
  // Computes the logits from a Q8_0 or Q4_0 copy of an f32/f16/bf16 LM head; other heads are left as they are.
  virtual void quantize_lm_head(DType block) = 0;

  // A cache for one sequence of up to `context` positions, holding keys and values as `dtype` (F32 or F16).
  virtual nn::KVCache make_cache(int64_t context, DType dtype = DType::F32) const = 0;
  // Whether a cache filled up to `length` positions can be rewound to `keep` positions and extended from
  // there: sliding layers' rings keep only max_chunk - 1 positions beyond their window.
  virtual bool can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const = 0;

  // Runs `tokens` at positions start_pos, start_pos + 1, ... of the sequence held in `cache` and writes
  // logits: of every position ([n, vocab]) when all_positions, else of the last one ([vocab]).
  // `blocks` (sorted, disjoint, within `tokens`) replace embeddings and attend bidirectionally; a block is
  // never split across forward steps (a model without images refuses them).
  virtual void forward(std::span<const int32_t> tokens, int64_t start_pos, nn::KVCache& cache,
                       kernels::ThreadPool& pool, float* logits, bool all_positions,
                       const HiddenObserver* observer = nullptr, std::span<const EmbeddingBlock> blocks = {}) = 0;

  // One decode step of several sequences in one pass over the weights: writes the logits of each row
  // ([rows, vocab]), equal to those of forward() on that row alone. Each row has its own cache.
  virtual void decode(std::span<const DecodeRow> rows, kernels::ThreadPool& pool, float* logits) = 0;
};

}  // namespace ge::models
