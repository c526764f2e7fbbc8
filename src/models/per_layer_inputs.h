// Per-layer inputs (PLE), the part Gemma 3n and Gemma 4 share: each token gets a small vector per layer from
// a [vocab, layers * width] table (most of the model's bytes, read one row per token) plus a projection of
// its embedding, and each layer gates its slice into the residual stream.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "kernels/thread_pool.h"
#include "nn/layer_source.h"
#include "nn/linear.h"

namespace ge::models {

// transformers' get_per_layer_inputs + project_per_layer_inputs.
struct PerLayerInputs {
  nn::Embedding embed_tokens_per_layer;   // [>= vocab_size_per_layer_input, layers * width]
  nn::Linear per_layer_model_projection;  // [layers * width, hidden]
  nn::RMSNorm per_layer_projection_norm;  // [width], weight as stored
  int64_t layers = 0, width = 0;

  // Binds `<prefix>embed_tokens_per_layer` (at least `min_rows` rows: a GGUF file pads it to the whole
  // vocabulary), `<prefix>per_layer_model_projection` and `<prefix>per_layer_projection_norm`.
  static PerLayerInputs bind(const nn::LayerSource& s, const std::string& prefix, int64_t layers, int64_t width,
                             int64_t hidden, int64_t min_rows, float eps);

  // out [n, layers * width] = (norm(per_layer_model_projection(e) / sqrt(hidden)) + the table's row of each
  // id * bf16(sqrt(width))) / sqrt(2), for embeddings e [n, hidden]; `row` holds layers * width floats.
  void compute(std::span<const int32_t> ids, const float* embeddings, int64_t n, kernels::ThreadPool& pool,
               kernels::Precision precision, float* out, float* row) const;
  // Bytes one token reads: a row of the table.
  size_t row_bytes() const;
};

// One layer's gate: out [n, hidden] = post_per_layer_input_norm(per_layer_projection(gelu_tanh(
// per_layer_input_gate(x)) * input)), input being the layer's slice of PerLayerInputs (row stride `stride`).
struct PerLayerGate {
  nn::Linear per_layer_input_gate;  // [width, hidden]
  nn::Linear per_layer_projection;  // [hidden, width]
  nn::RMSNorm post_per_layer_input_norm;

  static PerLayerGate bind(const nn::LayerSource& s, const std::string& layer_prefix, int64_t width, int64_t hidden,
                           float eps);
  // `gate` holds n * width floats.
  void operator()(kernels::ThreadPool& pool, kernels::Precision precision, const float* x, int64_t n,
                  const float* input, int64_t stride, float* gate, float* out) const;
};

}  // namespace ge::models
