// Keys and values of one sequence, per layer. Global layers keep every position; sliding-window layers
// keep a ring just large enough for the window plus one prefill chunk, so that a chunk's first queries still
// find the keys they need after the chunk's own keys were written (a 1B model at 32k context: ~0.3 GB in f32
// instead of ~1.7 GB; half that with an f16 cache).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "tensor/dtype.h"

namespace ge::nn {

class KVCache {
 public:
  // capacity[i]: rows kept for layer i (context for global layers); each row holds n_kv_heads * head_dim
  // values for K and for V, stored as `dtype` (F32, or F16 to halve the memory).
  KVCache(std::vector<int64_t> capacity, int64_t context, int64_t n_kv_heads, int64_t head_dim,
          DType dtype = DType::F32);
  // Layers of different shapes (Gemma 4: wider heads on its global layers).
  struct LayerShape {
    int64_t capacity = 0, kv_heads = 0, head_dim = 0;
  };
  KVCache(const std::vector<LayerShape>& layers, int64_t context, DType dtype = DType::F32);

  // Stores the keys and values (n_kv_heads * head_dim floats each) of position `pos` of `layer`.
  void store(int64_t layer, int64_t pos, const float* k, const float* v);
  kernels::KVRows head(int64_t layer, int64_t kv_head) const;

  // The rows of the layers that keep a ring (capacity < context), copied: restoring them brings those
  // layers back to where they were, however far the sequence went on since, while global layers need
  // nothing restored as long as the positions they keep were not rewritten.
  struct RingSnapshot {
    std::vector<std::vector<std::byte>> k, v;
    size_t bytes() const;
  };
  void save_rings(RingSnapshot& into) const;  // reuses the buffers `into` has
  void restore_rings(const RingSnapshot& from);

  int64_t layers() const { return static_cast<int64_t>(capacity_.size()); }
  int64_t capacity(int64_t layer) const { return capacity_[layer]; }
  int64_t context() const { return context_; }  // positions the sequence may reach
  DType dtype() const { return dtype_; }
  size_t bytes() const;

 private:
  std::byte* row(std::vector<std::byte>& buf, int64_t layer, int64_t pos) {
    return buf.data() + (pos % capacity_[layer]) * row_values_[layer] * element_bytes_;
  }
  void store_row(std::byte* dst, const float* src, int64_t n) const;

  std::vector<int64_t> capacity_;
  int64_t context_;
  std::vector<int64_t> head_dim_, row_values_;  // per layer
  DType dtype_;
  size_t element_bytes_;
  std::vector<std::vector<std::byte>> k_, v_;
};

}  // namespace ge::nn
