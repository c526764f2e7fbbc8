// What every Gemma decoder does the same way around its forward step: cutting a prompt into steps (never
// through an embedding block), grouping decode rows, and choosing each step's precision. A family supplies
// the step (forward_rows) and its token checks.
#pragma once
#include <span>
#include <vector>

#include "models/causal_lm.h"

namespace ge::models {

class Decoder : public CausalLM {
 public:
  // kReducedActivations readies the layers first (prepare_reduced_activations does nothing the second time).
  void set_prefill_precision(kernels::Precision p) override;
  void set_decode_precision(kernels::Precision p) override;

  void forward(std::span<const int32_t> tokens, int64_t start_pos, nn::KVCache& cache, kernels::ThreadPool& pool,
               float* logits, bool all_positions, const HiddenObserver* observer = nullptr,
               std::span<const EmbeddingBlock> blocks = {}) override;
  // At most 16 rows a pass: fewer than the GEMM's threshold, so every row takes a lone step's kernels and
  // gets its logits to the last bit (a greedy answer must not change with a server's load).
  void decode(std::span<const DecodeRow> rows, kernels::ThreadPool& pool, float* logits) override;

 protected:
  // rows: most rows one step holds (chunk_capacity()).
  explicit Decoder(int64_t rows);

  // Throws naming the position of an id the model cannot embed (`blocks` replace the embeddings of theirs).
  virtual void check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                            std::span<const EmbeddingBlock> blocks) const = 0;
  // Throws for blocks the model cannot take; the default takes none.
  virtual void check_blocks(std::span<const EmbeddingBlock> blocks, int64_t n_tokens, int64_t start_pos) const;
  // One step over the rows set in positions_ and caches_ (a chunk of one sequence, or one token of each of
  // several), up to the last layer's output.
  virtual void forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const HiddenObserver* observer,
                            std::span<const EmbeddingBlock> blocks) = 0;
  // Logits [n_rows, vocab] of the step's rows from first_row on: final norm, LM head, soft-cap.
  virtual void lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) = 0;

  kernels::Precision prefill_precision() const { return prefill_precision_; }
  kernels::Precision decode_precision() const { return decode_precision_; }
  bool reduced_anywhere() const {
    return prefill_precision_ == kernels::Precision::kReducedActivations ||
           decode_precision_ == kernels::Precision::kReducedActivations;
  }

  // The step running now: its precision, each row's position and cache, and whether the rows are consecutive
  // positions of one cache (a prompt chunk, which attention may read as query tiles).
  kernels::Precision step_precision_ = kernels::Precision::kExact;
  std::vector<int64_t> positions_;
  std::vector<nn::KVCache*> caches_;
  bool one_sequence_ = true;

 private:
  kernels::Precision prefill_precision_ = kernels::Precision::kExact;
  kernels::Precision decode_precision_ = kernels::Precision::kExact;
  std::vector<int32_t> decode_tokens_;
  std::vector<EmbeddingBlock> step_blocks_;
};

}  // namespace ge::models
