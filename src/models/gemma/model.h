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
#include "models/causal_lm.h"
#include "models/decoder.h"
#include "models/gemma/config.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"
#include "nn/layer_source.h"
#include "nn/linear.h"
#include "nn/mlp.h"
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
  nn::GatedMlp mlp;                        // [intermediate, hidden] x 2, [hidden, intermediate]
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

// The formats of the model's matrices (nn::formats_summary).
std::string matrix_formats(const Weights& w);
// Parameters of the text model (the embedding counted once when tied), from its shapes.
int64_t parameter_count(const Config& c);

using models::DecodeRow;
using models::EmbeddingBlock;
using models::HiddenObserver;

class Model final : public models::Decoder {
 public:
  // max_chunk: most tokens run through one forward step; longer inputs are processed in chunks.
  Model(Config config, const nn::LayerSource& source, int64_t max_chunk = 256);
  // An unquantized checkpoint (or a GGUF file, whose block types need no config).
  Model(Config config, const TensorSource& source, int64_t max_chunk = 256)
      : Model(std::move(config), nn::LayerSource(source), max_chunk) {}

  const Config& config() const { return config_; }
  const Weights& weights() const { return weights_; }

  const char* family_name() const override { return config_.family_name(); }
  Shape shape() const override;
  std::string matrix_formats() const override { return gemma::matrix_formats(weights_); }
  int64_t parameter_count() const override { return gemma::parameter_count(config_); }
  size_t weight_bytes_per_token() const override;
  int64_t max_chunk() const override { return max_chunk_; }
  int64_t chunk_capacity() const override { return chunk_capacity_; }

  // kReducedActivations: bf16 for bf16 weights (~5e-3 on logits for ~2x; AVX512_BF16 prompts); 8-bit
  // blocks for GGUF block types and MLX 4/8-bit weights (~3x).
  void prepare_reduced_activations(const Progress& progress = {}) override;
  // The copy is kept beside the embedding table, which lookups still read: on the 270M, whose tied head is
  // 63% of its weights, bf16 decode then reads 379 MB a token instead of 536.
  void quantize_lm_head(DType block) override;

  nn::KVCache make_cache(int64_t context, DType dtype = DType::F32) const override;
  bool can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const override;

 private:
  // Blocks must fit a step (an image's soft tokens attend to each other).
  void check_blocks(std::span<const EmbeddingBlock> blocks, int64_t n_tokens, int64_t start_pos) const override;
  void check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                    std::span<const EmbeddingBlock> blocks) const override;
  void forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const HiddenObserver* observer,
                    std::span<const EmbeddingBlock> blocks) override;
  void embed(std::span<const int32_t> tokens, std::span<const EmbeddingBlock> blocks);
  void attention_block(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void mlp_block(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) override;
  void linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n, float* y) const;

  Config config_;
  Weights weights_;
  int64_t max_chunk_;
  int64_t chunk_capacity_;
  nn::RopeTables rope_;
  // Activations of one chunk, allocated once so the decode loop never allocates.
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, proj_, gate_, up_;
  // Per position of the chunk: the last key position it attends to and the first its block reaches back
  // to (itself, for a token outside any block).
  std::vector<int64_t> block_first_, block_last_;
  std::vector<int64_t> key_first_;  // per query of the chunk: the first position its layer lets it see
};

}  // namespace ge::gemma
