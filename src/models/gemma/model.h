// The Gemma decoder (transformers' GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM), read top to
// bottom like the papers:
// embed x sqrt(d) -> [RMSNorm -> attention (Gemma 3: q/k norm; RoPE; GQA; sliding or global; Gemma 2:
// soft-capped scores) -> (Gemma 2/3: RMSNorm) -> +residual -> RMSNorm -> gated tanh-GELU MLP ->
// (Gemma 2/3: RMSNorm) -> +residual] x L -> RMSNorm -> tied LM head -> (Gemma 2/3: soft-cap).
// One decoder with the differences as config data reads better than three near-copies: the families
// share every operation and differ only in which norms exist and how layers attend.
#pragma once
#include <functional>
#include <span>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/thread_pool.h"
#include "models/gemma/config.h"
#include "nn/kv_cache.h"
#include "nn/layer_source.h"
#include "nn/linear.h"
#include "tensor/tensor_source.h"

namespace ge::gemma {

struct LayerWeights {
  nn::RMSNorm input_layernorm;             // [hidden]
  nn::Linear q_proj;                       // [num_heads * head_dim, hidden]
  nn::Linear k_proj;                       // [num_kv_heads * head_dim, hidden]
  nn::Linear v_proj;                       // [num_kv_heads * head_dim, hidden]
  nn::RMSNorm q_norm;                      // [head_dim], Gemma 3 only
  nn::RMSNorm k_norm;                      // [head_dim], Gemma 3 only
  nn::Linear o_proj;                       // [hidden, num_heads * head_dim]
  nn::RMSNorm post_attention_layernorm;    // [hidden], Gemma 2/3 only
  nn::RMSNorm pre_feedforward_layernorm;   // [hidden]; Gemma 1 stores it as post_attention_layernorm
  nn::Linear gate_proj;                    // [intermediate, hidden]
  nn::Linear up_proj;                      // [intermediate, hidden]
  nn::Linear down_proj;                    // [hidden, intermediate]
  nn::RMSNorm post_feedforward_layernorm;  // [hidden], Gemma 2/3 only
};

struct Weights {
  nn::Embedding embed_tokens;  // [vocab, hidden]
  nn::RMSNorm norm;            // [hidden]
  nn::Linear lm_head;          // [vocab, hidden]; the embedding table itself when tied
  std::vector<LayerWeights> layers;
};

// Binds every layer by its Hugging Face module path (under model., language_model.model. or
// model.language_model.) in whatever format the checkpoint stores it; throws naming the tensor when one
// is missing or misshapen.
Weights bind_weights(const Config& c, const nn::LayerSource& source);

// The formats of the model's matrices, most frequent first and joined by '+' when they differ: a
// llama-quantize mix such as Q4_K_M of the 270M reads "Q5_0+Q8_0+Q4_K+Q6_K".
std::string matrix_formats(const Weights& w);
// Parameters of the text model (the embedding counted once when tied), from its shapes.
int64_t parameter_count(const Config& c);

// Called with the residual stream: index 0 after the embedding, i + 1 after layer i; rows are
// positions [start, start + n_tokens).
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

class Model {
 public:
  // max_chunk: most tokens run through one forward step; longer inputs are processed in chunks.
  Model(Config config, const nn::LayerSource& source, int64_t max_chunk = 256);
  // An unquantized checkpoint (or a GGUF file, whose block types need no config).
  Model(Config config, const TensorSource& source, int64_t max_chunk = 256)
      : Model(std::move(config), nn::LayerSource(source), max_chunk) {}

  const Config& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  int64_t max_chunk() const { return max_chunk_; }
  // Most tokens one forward step holds: max_chunk, or a whole image block when that is longer.
  int64_t chunk_capacity() const { return chunk_capacity_; }

  // Precision of the matmuls of multi-token chunks (prompt processing) and of single-token decode steps;
  // both exact unless set. kReducedActivations rounds activations as llama.cpp does (bf16 for bf16 weights:
  // ~5e-3 on logits for ~2x; 8-bit blocks for q8_0/q4_0 and MLX 4/8-bit weights: ~3x).
  // Reduced precision readies the layers for it first (MLX-quantized weights are repacked once).
  void set_prefill_precision(kernels::Precision p);
  // Readies every layer for kReducedActivations: repacks quantized matrices, the slow part of loading a
  // quantized model (seconds for a 1B). `progress(done, total)` follows each layer; the setters above call
  // it without one (and it does nothing the second time).
  using Progress = std::function<void(int64_t done, int64_t total)>;
  void prepare_reduced_activations(const Progress& progress = {});
  void set_decode_precision(kernels::Precision p);

  // Computes the logits from a Q8_0 or Q4_0 copy of the LM head (kept beside the embedding table, which
  // lookups still read), for f32/f16/bf16 heads: on the 270M, whose tied head is 63% of its weights, bf16
  // decode then reads 379 MB a token instead of 536. Other head formats are left as they are.
  void quantize_lm_head(DType block);

  // A cache for one sequence of up to `context` positions, holding keys and values as `dtype` (F32 or F16).
  nn::KVCache make_cache(int64_t context, DType dtype = DType::F32) const;

  // Whether a cache filled up to `length` positions can be rewound to `keep` positions and extended from
  // there: sliding layers' rings keep only max_chunk - 1 positions beyond their window.
  bool can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const;

  // Runs `tokens` at positions start_pos, start_pos + 1, ... of the sequence held in `cache` and writes
  // logits: of every position ([n, vocab]) when all_positions, else of the last one ([vocab]).
  // `blocks` (sorted, disjoint, within `tokens`) replace embeddings and attend bidirectionally; a block is
  // never split across forward steps.
  void forward(std::span<const int32_t> tokens, int64_t start_pos, nn::KVCache& cache,
               kernels::ThreadPool& pool, float* logits, bool all_positions,
               const HiddenObserver* observer = nullptr, std::span<const EmbeddingBlock> blocks = {});

  // One decode step of several sequences in one pass over the weights (what makes serving many clients
  // pay on a bandwidth-bound CPU): writes the logits of each row ([rows, vocab]), equal to those of forward()
  // on that row alone (bit for bit where the CPU has no AVX512_BF16 / VNNI kernel that 8 or more rows would
  // take). Each row has its own cache (no two rows may share one).
  void decode(std::span<const DecodeRow> rows, kernels::ThreadPool& pool, float* logits);

 private:
  void check_blocks(std::span<const EmbeddingBlock> blocks, int64_t n_tokens, int64_t start_pos) const;
  void check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                    std::span<const EmbeddingBlock> blocks) const;
  // One forward step over the rows set in positions_ and caches_ (a chunk of one sequence, or one token
  // of each of several); logits of every row when all_positions, else of the last.
  void forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, float* logits,
                    bool all_positions, const HiddenObserver* observer, std::span<const EmbeddingBlock> blocks);
  void embed(std::span<const int32_t> tokens, std::span<const EmbeddingBlock> blocks);
  void prepare_rope(int64_t n);
  void attention_block(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void mlp_block(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits);
  void linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n, float* y) const;

  Config config_;
  Weights weights_;
  int64_t max_chunk_;
  int64_t chunk_capacity_;
  kernels::Precision prefill_precision_ = kernels::Precision::kExact;
  kernels::Precision decode_precision_ = kernels::Precision::kExact;
  kernels::Precision step_precision_ = kernels::Precision::kExact;  // of the forward step running now
  // RoPE tables per distinct (base, scale): [max_chunk, head_dim / 2] each for cos and sin.
  std::vector<std::pair<double, double>> rope_kinds_;
  std::vector<int> layer_rope_kind_;
  std::vector<std::vector<float>> rope_cos_, rope_sin_;
  // Activations of one chunk, allocated once so the decode loop never allocates.
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, proj_, gate_, up_;
  // Per position of the chunk: the last key position it attends to and the first its block reaches back
  // to (itself, for a token outside any block).
  std::vector<int64_t> block_first_, block_last_;
  std::vector<int64_t> key_first_;  // per query of the chunk: the first position its layer lets it see
  // Per row of the step: its position and its sequence's cache; one_sequence_ when the rows are consecutive
  // positions of one cache (a prompt chunk), which lets attention read them as query tiles.
  std::vector<int64_t> positions_;
  std::vector<nn::KVCache*> caches_;
  bool one_sequence_ = true;
  std::vector<int32_t> decode_tokens_;
};

}  // namespace ge::gemma
