#include "nn/mlp.h"

#include <algorithm>

#include "kernels/ops.h"

namespace ge::nn {

GatedMlp GatedMlp::bind(const LayerSource& s, const std::string& p, int64_t hidden, int64_t intermediate) {
  return {s.linear(p + "gate_proj", intermediate, hidden), s.linear(p + "up_proj", intermediate, hidden),
          s.linear(p + "down_proj", hidden, intermediate)};
}

void GatedMlp::project(kernels::ThreadPool& pool, kernels::Precision precision, const float* x, int64_t n,
                       float* gate, float* up) const {
  gate_proj(pool, x, n, gate, precision);
  up_proj(pool, x, n, up, precision);
}

void GatedMlp::combine(kernels::ThreadPool& pool, kernels::Precision precision, float* gate, const float* up,
                       int64_t n, float* out) const {
  // tanh is the costly part of the MLP outside the matmuls: split it over the pool in slices.
  constexpr int64_t kSlice = 1024;
  const int64_t total = n * gate_proj.out_features();
  pool.run((total + kSlice - 1) / kSlice, [&](int64_t s) {
    const int64_t begin = s * kSlice, count = std::min(kSlice, total - begin);
    kernels::gelu_tanh_mul(gate + begin, up + begin, count, gate + begin);
  });
  down_proj(pool, gate, n, out, precision);
}

}  // namespace ge::nn
