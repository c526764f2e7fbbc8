#include "nn/kv_cache.h"

namespace ge::nn {

KVCache::KVCache(std::vector<int64_t> capacity, int64_t context, int64_t n_kv_heads, int64_t head_dim)
    : capacity_(std::move(capacity)), context_(context), head_dim_(head_dim), row_floats_(n_kv_heads * head_dim) {
  for (int64_t c : capacity_) {
    k_.emplace_back(static_cast<size_t>(c * row_floats_));
    v_.emplace_back(static_cast<size_t>(c * row_floats_));
  }
}

kernels::KVRows KVCache::head(int64_t layer, int64_t kv_head) const {
  return {k_[layer].data() + kv_head * head_dim_, v_[layer].data() + kv_head * head_dim_, row_floats_,
          capacity_[layer]};
}

size_t KVCache::bytes() const {
  size_t n = 0;
  for (const auto& k : k_) n += 2 * k.size() * sizeof(float);
  return n;
}

}  // namespace ge::nn
