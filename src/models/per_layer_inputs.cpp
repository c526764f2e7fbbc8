#include "models/per_layer_inputs.h"

#include <cmath>

#include "kernels/ops.h"
#include "models/causal_lm.h"
#include "tensor/dtype.h"

namespace ge::models {

PerLayerInputs PerLayerInputs::bind(const nn::LayerSource& s, const std::string& prefix, int64_t layers,
                                    int64_t width, int64_t hidden, int64_t min_rows, float eps) {
  PerLayerInputs p;
  p.layers = layers;
  p.width = width;
  const std::string table = prefix + "embed_tokens_per_layer";
  const Tensor* t = s.tensors().find(table + ".weight");
  const int64_t rows = t && !t->shape.empty() && t->shape[0] >= min_rows ? t->shape[0] : min_rows;
  p.embed_tokens_per_layer = s.embedding(table, rows, layers * width);
  p.per_layer_model_projection = s.linear(prefix + "per_layer_model_projection", layers * width, hidden);
  p.per_layer_projection_norm = s.rms_norm(prefix + "per_layer_projection_norm", width, eps, false);
  return p;
}

void PerLayerInputs::compute(std::span<const int32_t> ids, const float* embeddings, int64_t n,
                             kernels::ThreadPool& pool, kernels::Precision precision, float* out, float* row) const {
  const int64_t total = layers * width, hidden = per_layer_model_projection.in_features();
  per_layer_model_projection(pool, embeddings, n, out, precision);
  const auto projection_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hidden)));
  for (int64_t i = 0; i < n * total; ++i) out[i] *= projection_scale;
  per_layer_projection_norm(out, n * layers, out);
  const float scale = embedding_scale(width);
  const auto inv_sqrt2 = static_cast<float>(1.0 / std::sqrt(2.0));
  for (int64_t t = 0; t < n; ++t) {
    embed_tokens_per_layer.lookup(ids[t], scale, row);
    float* o = out + t * total;
    for (int64_t i = 0; i < total; ++i) o[i] = (o[i] + row[i]) * inv_sqrt2;
  }
}

size_t PerLayerInputs::row_bytes() const {
  const nn::Weight& table = embed_tokens_per_layer.as_linear().weight();
  return nn::weight_bytes(table) / static_cast<size_t>(nn::weight_rows(table));
}

PerLayerGate PerLayerGate::bind(const nn::LayerSource& s, const std::string& p, int64_t width, int64_t hidden,
                                float eps) {
  return {s.linear(p + "per_layer_input_gate", width, hidden), s.linear(p + "per_layer_projection", hidden, width),
          s.rms_norm(p + "post_per_layer_input_norm", hidden, eps, false)};
}

void PerLayerGate::operator()(kernels::ThreadPool& pool, kernels::Precision precision, const float* x, int64_t n,
                              const float* input, int64_t stride, float* gate, float* out) const {
  const int64_t width = per_layer_input_gate.out_features();
  per_layer_input_gate(pool, x, n, gate, precision);
  for (int64_t t = 0; t < n; ++t)
    kernels::gelu_tanh_mul(gate + t * width, input + t * stride, width, gate + t * width);
  per_layer_projection(pool, gate, n, out, precision);
  post_per_layer_input_norm(out, n, out);
}

}  // namespace ge::models
