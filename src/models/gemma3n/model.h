// Gemma 3n's text decoder (transformers' Gemma3nTextModel inside Gemma3nForConditionalGeneration, text ids
// only), read top to bottom as modeling_gemma3n.py:
// embed x bf16(sqrt(d)) and per-layer inputs -> AltUp: n streams (stream 0 the embedding, the others its
// projections at its RMS) -> [AltUp predict -> RMSNorm -> LAuReL + attention (q/k/v norms, scaling 1, RoPE
// per layer type, the last layers reading an earlier layer's keys and values) -> (x + attn + laurel) / sqrt 2
// -> gated tanh-GELU MLP (the first layers' gates sparsified at mean + std * probit(p)) -> AltUp correct ->
// the per-layer input gated into streams 1..n-1] x L -> streams unprojected to stream 0's RMS and averaged
// -> RMSNorm -> tied LM head -> soft-cap.
// The per-layer embedding table (E2B: 262144 x 30 x 256 bf16, 4 GB, most of the model) is read one row
// per token where it is mapped: resident memory grows with the distinct tokens seen, not with the table.
#pragma once
#include <optional>
#include <span>
#include <vector>

#include "models/causal_lm.h"
#include "models/decoder.h"
#include "models/gemma3n/config.h"
#include "models/per_layer_inputs.h"
#include "models/shared_kv_attention.h"
#include "nn/attention.h"
#include "nn/layer_source.h"
#include "nn/linear.h"
#include "nn/mlp.h"

namespace ge::gemma3n {

// Gemma3nTextAltUp: the n x n mixing coefficients come from a tanh router on the active stream; the
// coefficient matrices are tiny (n = 4) and held widened.
struct AltUpWeights {
  nn::RMSNorm router_norm;       // [hidden]
  nn::Linear modality_router;    // [n, hidden]
  std::vector<float> prediction_coefs;  // [n * n, n]
  std::vector<float> correction_coefs;  // [n, n], clamped to altup_coef_clip
  std::vector<float> correct_output_scale;  // [hidden]
};

struct LayerWeights {
  nn::RMSNorm input_layernorm;
  models::SharedKvAttention self_attn;
  nn::RMSNorm post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;
  nn::GatedMlp mlp;
  AltUpWeights altup;
  nn::Linear laurel_left, laurel_right;  // [rank, hidden], [hidden, rank]
  nn::RMSNorm post_laurel_norm;
  models::PerLayerGate per_layer_gate;
};

// Gemma3nMultimodalEmbedder for ids typed as text: hard embedding -> norm -> projection -> weightless norm.
struct MultimodalEmbedder {
  int64_t vocab_offset = 0;
  nn::Embedding embedding;
  nn::RMSNorm hard_embedding_norm;
  nn::Linear embedding_projection;
  nn::RMSNorm embedding_post_projection_norm;
};

struct Weights {
  nn::Embedding embed_tokens;            // [vocab, hidden]; also the tied LM head
  models::PerLayerInputs per_layer;  // the table has >= vocab_size_per_layer_input rows
  std::vector<nn::Linear> altup_projections, altup_unembed_projections;  // n - 1 each, [hidden, hidden]
  nn::RMSNorm norm;
  nn::Linear lm_head;
  std::optional<MultimodalEmbedder> embed_vision, embed_audio;
  std::vector<LayerWeights> layers;
};

// Binds the text decoder under model.language_model. (Gemma3nForConditionalGeneration) or model.
// (Gemma3nForCausalLM), plus the embed_vision / embed_audio embedders when the config and checkpoint have
// them. Throws naming the tensor that is missing or misshapen (the per-layer tables included).
Weights bind_weights(const Config& c, const nn::LayerSource& source);

int64_t parameter_count(const Config& c);

class Model final : public models::Decoder {
 public:
  Model(Config config, const nn::LayerSource& source, int64_t max_chunk = 256);

  const Config& config() const { return config_; }
  const Weights& weights() const { return weights_; }

  const char* family_name() const override { return "gemma3n"; }
  Shape shape() const override;
  std::string matrix_formats() const override;
  int64_t parameter_count() const override { return gemma3n::parameter_count(config_); }
  // One row of the per-layer table (layers x hidden_per_layer values), not the table.
  size_t weight_bytes_per_token() const override;
  int64_t max_chunk() const override { return max_chunk_; }
  int64_t chunk_capacity() const override { return max_chunk_; }

  void prepare_reduced_activations(const Progress& progress = {}) override;
  void quantize_lm_head(DType block) override;

  // Caches exist for the layers before the KV-shared ones only.
  nn::KVCache make_cache(int64_t context, DType dtype = DType::F32) const override;
  bool can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const override;

 private:
  void check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                    std::span<const models::EmbeddingBlock> blocks) const override;
  void forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const models::HiddenObserver* observer,
                    std::span<const models::EmbeddingBlock> blocks) override;
  void embed(std::span<const int32_t> tokens, kernels::ThreadPool& pool);
  void per_layer_inputs(std::span<const int32_t> tokens, int64_t n, kernels::ThreadPool& pool);
  void expand_streams(int64_t n, kernels::ThreadPool& pool);
  void decoder_layer(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void router(const AltUpWeights& w, const float* x, int64_t n, kernels::ThreadPool& pool, float* out);
  void altup_predict(const AltUpWeights& w, int64_t n, kernels::ThreadPool& pool);
  void altup_correct(const AltUpWeights& w, int64_t n, kernels::ThreadPool& pool);
  void attention(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void mlp(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void per_layer_update(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) override;
  void linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n, float* y) const;
  std::vector<nn::Linear*> matrices();
  std::vector<const nn::Linear*> matrices() const;

  Config config_;
  Weights weights_;
  int64_t max_chunk_;
  nn::RopeTables rope_;
  // Activations of one step, allocated once so the decode loop never allocates. streams_ and
  // predictions_ are [altup_num_inputs, rows, hidden].
  std::vector<float> streams_, predictions_, per_layer_, active_, normed_, laurel_, laurel_rank_, q_, k_, v_,
      attn_, proj_, gate_, up_, router_, coefs_, gate_per_layer_;
  std::vector<double> rms_;  // per row: stream 0's RMS, the target of the other streams' rescaling
  std::vector<int64_t> key_first_, key_last_;
  std::vector<int32_t> per_layer_ids_;  // per row: the per-layer table's row
  int64_t step_rows_ = 0;  // rows of the step running now: the stride between streams
};

}  // namespace ge::gemma3n
