// Gemma 4's text decoder (transformers' Gemma4TextModel, text ids only; dense layers), read top to bottom
// as modeling_gemma4.py:
// embed x bf16(sqrt(d)) and per-layer inputs -> [RMSNorm -> attention (q/k norms, weightless v norm,
// scaling 1; sliding layers: default RoPE over head_dim; full layers: global_head_dim, proportional RoPE,
// V = raw K with attention_k_eq_v; the last layers reading an earlier layer's keys and values) -> RMSNorm ->
// +residual -> RMSNorm -> gated tanh-GELU MLP (double width on KV-shared layers with use_double_wide_mlp)
// -> RMSNorm -> +residual -> per-layer input gated in -> x layer_scalar] x L -> RMSNorm -> tied LM head ->
// soft-cap. Every norm multiplies by its weight as stored.
#pragma once
#include <optional>
#include <span>
#include <vector>

#include "models/causal_lm.h"
#include "models/decoder.h"
#include "models/gemma4/config.h"
#include "models/per_layer_inputs.h"
#include "models/shared_kv_attention.h"
#include "nn/attention.h"
#include "nn/layer_source.h"
#include "nn/linear.h"
#include "nn/mlp.h"

namespace ge::gemma4 {

// Gemma4TextRouter and Gemma4TextExperts, beside the dense MLP of a MoE layer.
struct Experts {
  nn::RMSNorm router_norm;                 // weightless
  std::vector<float> router_scale;         // [hidden]
  nn::Linear router_proj;                  // [experts, hidden]
  std::vector<float> per_expert_scale;     // [experts]
  std::vector<nn::Linear> gate, up, down;  // per expert: [moe_intermediate, hidden] twice, [hidden, moe_intermediate]
  nn::RMSNorm pre_feedforward_layernorm_2, post_feedforward_layernorm_1, post_feedforward_layernorm_2;
};

struct LayerWeights {
  nn::RMSNorm input_layernorm;
  models::SharedKvAttention self_attn;
  nn::RMSNorm post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;
  nn::GatedMlp mlp;
  std::optional<models::PerLayerGate> per_layer_gate;  // with per-layer inputs
  std::optional<Experts> experts;                      // enable_moe_block
  float layer_scalar = 1.0f;
};

struct Weights {
  nn::Embedding embed_tokens;  // also the tied LM head
  std::optional<models::PerLayerInputs> per_layer;
  nn::RMSNorm norm;
  nn::Linear lm_head;
  std::vector<LayerWeights> layers;
};

// Binds the text decoder under model.language_model. (Gemma4ForConditionalGeneration), model.
// (Gemma4ForCausalLM) or language_model.model. (mlx-lm); throws naming a missing or misshapen tensor. Experts
// are views of the stacked [experts, rows, cols] tensors (fused gate_up, or mlx-lm's switch_glu gate / up /
// down, MLX-quantized or not), read where they are mapped.
Weights bind_weights(const Config& c, const nn::LayerSource& source);

class Model final : public models::Decoder {
 public:
  Model(Config config, const nn::LayerSource& source, int64_t max_chunk = 256);

  const Config& config() const { return config_; }
  const Weights& weights() const { return weights_; }

  const char* family_name() const override { return "gemma4"; }
  Shape shape() const override;
  std::string matrix_formats() const override;
  int64_t parameter_count() const override;
  size_t weight_bytes_per_token() const override;
  int64_t max_chunk() const override { return max_chunk_; }
  int64_t chunk_capacity() const override { return max_chunk_; }

  void prepare_reduced_activations(const Progress& progress = {}) override;
  void quantize_lm_head(DType block) override;

  nn::KVCache make_cache(int64_t context, DType dtype = DType::F32) const override;
  bool can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const override;

 private:
  void check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                    std::span<const models::EmbeddingBlock> blocks) const override;
  void forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const models::HiddenObserver* observer,
                    std::span<const models::EmbeddingBlock> blocks) override;
  void embed(std::span<const int32_t> tokens, kernels::ThreadPool& pool);
  void attention(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void mlp(int64_t layer, int64_t n, kernels::ThreadPool& pool);
  void route(const Experts& e, int64_t n, kernels::ThreadPool& pool);
  void run_experts(const Experts& e, int64_t n, kernels::ThreadPool& pool, float* out);
  void lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) override;
  void linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n, float* y) const;
  std::vector<const nn::Linear*> matrices(bool all_experts) const;

  Config config_;
  Weights weights_;
  const TensorSource& tensors_;  // where the weights are, to let go of the experts' once repacked
  int64_t max_chunk_;
  nn::RopeTables rope_;
  // Activations of one step, allocated once.
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, proj_, gate_, up_, per_layer_, per_layer_gate_;
  std::vector<int32_t> ids_;  // the step's ids with placeholders replaced by pad
  // MoE: per row its top_k experts and their weights; per expert the rows routed to it, gathered.
  std::vector<int32_t> chosen_;
  std::vector<float> chosen_weight_, router_logits_, moe_in_, moe_gathered_, moe_gate_, moe_up_, moe_act_, moe_out_,
      moe_sum_;
  std::vector<int64_t> routed_rows_;  // per row routed to the expert at hand: its index in chosen_
  std::vector<int32_t> expert_order_;
  std::vector<int64_t> key_first_, key_last_;
};

}  // namespace ge::gemma4
