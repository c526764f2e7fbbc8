// Keys and values of one sequence, per layer. Global layers keep every position; sliding-window layers
// keep a ring just large enough for the window plus one prefill chunk, so that a chunk's first queries still
// find the keys they need after the chunk's own keys were written (a 1B model at 32k context: ~0.3 GB in f32
// instead of ~1.7 GB).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace ge::nn {

class KVCache {
 public:
  // capacity[i]: rows kept for layer i (context for global layers); each row holds n_kv_heads * head_dim floats for K and for V.
  KVCache(std::vector<int64_t> capacity, int64_t context, int64_t n_kv_heads, int64_t head_dim);

  float* key(int64_t layer, int64_t pos) { return row(k_[layer], layer, pos); }
  float* value(int64_t layer, int64_t pos) { return row(v_[layer], layer, pos); }
  kernels::KVRows head(int64_t layer, int64_t kv_head) const;

  int64_t capacity(int64_t layer) const { return capacity_[layer]; }
  int64_t context() const { return context_; }  // positions the sequence may reach
  size_t bytes() const;

 private:
  float* row(std::vector<float>& buf, int64_t layer, int64_t pos) {
    return buf.data() + (pos % capacity_[layer]) * row_floats_;
  }

  std::vector<int64_t> capacity_;
  int64_t context_;
  int64_t head_dim_;
  int64_t row_floats_;
  std::vector<std::vector<float>> k_, v_;
};

}  // namespace ge::nn
