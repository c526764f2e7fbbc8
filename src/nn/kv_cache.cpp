#include "nn/kv_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace ge::nn {

namespace {

std::vector<KVCache::LayerShape> uniform(const std::vector<int64_t>& capacity, int64_t n_kv_heads, int64_t head_dim) {
  std::vector<KVCache::LayerShape> layers;
  for (int64_t c : capacity) layers.push_back({c, n_kv_heads, head_dim});
  return layers;
}

// The cache's bytes, counted before anything is allocated: a context (--ctx, num_ctx) times layers times heads
// that overflows, or asks for more than the machine's memory, is an error rather than an allocation that fails
// (or that the kernel's OOM killer ends).
void check_size(const std::vector<KVCache::LayerShape>& layers, int64_t context, size_t element_bytes) {
  size_t total = 0;
  for (const KVCache::LayerShape& l : layers) {
    size_t layer = 0;
    if (l.capacity < 0 || l.kv_heads < 0 || l.head_dim < 0 ||
        __builtin_mul_overflow(static_cast<size_t>(l.capacity), static_cast<size_t>(l.kv_heads), &layer) ||
        __builtin_mul_overflow(layer, static_cast<size_t>(l.head_dim) * element_bytes * 2, &layer) ||
        __builtin_add_overflow(total, layer, &total))
      throw std::length_error("a KV cache of " + std::to_string(context) + " positions is too large to count");
  }
  const auto memory = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (total > memory)
    throw std::length_error("a KV cache of " + std::to_string(context) + " positions needs " +
                            std::to_string(total >> 20) + " MiB, more than this machine's " +
                            std::to_string(memory >> 20) + " MiB of memory: use a smaller context");
}

}  // namespace

KVCache::KVCache(std::vector<int64_t> capacity, int64_t context, int64_t n_kv_heads, int64_t head_dim, DType dtype)
    : KVCache(uniform(capacity, n_kv_heads, head_dim), context, dtype) {}

KVCache::KVCache(const std::vector<LayerShape>& layers, int64_t context, DType dtype)
    : context_(context), dtype_(dtype), element_bytes_(static_cast<size_t>(dtype_info(dtype).block_bytes)) {
  if (dtype != DType::F32 && dtype != DType::F16)
    throw std::invalid_argument("KV cache type must be f32 or f16, not " + std::string(dtype_info(dtype).name));
  check_size(layers, context, element_bytes_);
  for (const LayerShape& l : layers) {
    capacity_.push_back(l.capacity);
    head_dim_.push_back(l.head_dim);
    row_values_.push_back(l.kv_heads * l.head_dim);
    k_.emplace_back(static_cast<size_t>(l.capacity * row_values_.back()) * element_bytes_);
    v_.emplace_back(static_cast<size_t>(l.capacity * row_values_.back()) * element_bytes_);
  }
}

void KVCache::store_row(std::byte* dst, const float* src, int64_t n) const {
  if (dtype_ == DType::F32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  auto* out = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(src[i]);
}

void KVCache::store(int64_t layer, int64_t pos, const float* k, const float* v) {
  store_row(row(k_[layer], layer, pos), k, row_values_[layer]);
  store_row(row(v_[layer], layer, pos), v, row_values_[layer]);
}

kernels::KVRows KVCache::head(int64_t layer, int64_t kv_head) const {
  const size_t offset = static_cast<size_t>(kv_head * head_dim_[layer]) * element_bytes_;
  return {k_[layer].data() + offset, v_[layer].data() + offset, dtype_, row_values_[layer], capacity_[layer]};
}

void KVCache::save_rings(RingSnapshot& into) const {
  into.k.resize(k_.size());
  into.v.resize(v_.size());
  for (size_t l = 0; l < k_.size(); ++l) {
    const bool ring = capacity_[l] < context_;
    into.k[l].assign(ring ? k_[l].begin() : k_[l].end(), k_[l].end());
    into.v[l].assign(ring ? v_[l].begin() : v_[l].end(), v_[l].end());
  }
}

void KVCache::restore_rings(const RingSnapshot& from) {
  if (from.k.size() != k_.size()) throw std::invalid_argument("KV ring snapshot of another model");
  for (size_t l = 0; l < k_.size(); ++l)
    if (capacity_[l] < context_) {
      std::copy(from.k[l].begin(), from.k[l].end(), k_[l].begin());
      std::copy(from.v[l].begin(), from.v[l].end(), v_[l].begin());
    }
}

size_t KVCache::RingSnapshot::bytes() const {
  size_t n = 0;
  for (size_t l = 0; l < k.size(); ++l) n += k[l].size() + v[l].size();
  return n;
}

size_t KVCache::bytes() const {
  size_t n = 0;
  for (const auto& k : k_) n += 2 * k.size();
  return n;
}

}  // namespace ge::nn
