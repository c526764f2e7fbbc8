// Gemma's MLP, the same in every family: down_proj(gelu_tanh(gate_proj(x)) * up_proj(x)).
#pragma once
#include <string>

#include "kernels/thread_pool.h"
#include "nn/layer_source.h"
#include "nn/linear.h"

namespace ge::nn {

struct GatedMlp {
  Linear gate_proj, up_proj, down_proj;

  // `<prefix>gate_proj`, `<prefix>up_proj`, `<prefix>down_proj`.
  static GatedMlp bind(const LayerSource& s, const std::string& prefix, int64_t hidden, int64_t intermediate);

  // gate, up [n, intermediate] = gate_proj(x), up_proj(x).
  void project(kernels::ThreadPool& pool, kernels::Precision precision, const float* x, int64_t n, float* gate,
               float* up) const;
  // out [n, hidden] = down_proj(gelu_tanh(gate) * up); gate is overwritten.
  void combine(kernels::ThreadPool& pool, kernels::Precision precision, float* gate, const float* up, int64_t n,
               float* out) const;
};

}  // namespace ge::nn
