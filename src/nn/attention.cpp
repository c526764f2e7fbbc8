#include "nn/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace ge::nn {

namespace {

// Prompt chunks of at least kMinBlockedAttention tokens attend in tiles of kAttentionTile queries per head:
// two GEMMs over the keys the tile sees (kernels::attend_rows) instead of one pass over them per query
// (270m q8_0 pp512: attention went from 32% of the time to 5%, 317 -> 428 tok/s). Tiles that would see
// kMaxBlockedKeys keys or more (global layers deep into a long context) stream them per query, which
// needs no score buffer.
constexpr int64_t kMinBlockedAttention = 8, kAttentionTile = 64, kMaxBlockedKeys = 4096;

}  // namespace

RopeTables::RopeTables(const std::vector<std::vector<double>>& layer_inv_freq, int64_t rows) {
  for (const auto& kind : layer_inv_freq) {
    auto it = std::find(kinds_.begin(), kinds_.end(), kind);
    if (it == kinds_.end()) it = kinds_.insert(kinds_.end(), kind);
    layer_kind_.push_back(static_cast<int>(it - kinds_.begin()));
  }
  for (const auto& kind : kinds_) {
    cos_.emplace_back(static_cast<size_t>(rows) * kind.size());
    sin_.emplace_back(static_cast<size_t>(rows) * kind.size());
  }
}

std::vector<double> RopeTables::default_inv_freq(double base, double scale, int64_t head_dim) {
  std::vector<double> inv(static_cast<size_t>(head_dim / 2));
  for (size_t i = 0; i < inv.size(); ++i)
    inv[i] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim)) / scale;
  return inv;
}

void RopeTables::prepare(const int64_t* positions, int64_t n) {
  for (size_t kind = 0; kind < kinds_.size(); ++kind) {
    const std::vector<double>& inv = kinds_[kind];
    const auto half = static_cast<int64_t>(inv.size());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(positions[t]) * inv[i];
        cos_[kind][t * half + i] = static_cast<float>(std::cos(angle));
        sin_[kind][t * half + i] = static_cast<float>(std::sin(angle));
      }
  }
}

void RopeTables::apply(int64_t layer, int64_t t, float* x, int64_t heads) const {
  const int kind = layer_kind_[layer];
  const auto half = static_cast<int64_t>(kinds_[kind].size());
  kernels::rope_neox(x, heads, 2 * half, cos_[kind].data() + t * half, sin_[kind].data() + t * half);
}

void attend_cached(kernels::ThreadPool& pool, const AttentionStep& s, int64_t layer, int64_t num_heads,
                   int64_t num_kv_heads, int64_t hd, float scale, float softcap, float* out) {
  const int64_t width = num_heads * hd, group = num_heads / num_kv_heads, n = s.n;
  if (n < kMinBlockedAttention || !s.one_sequence) {
    pool.run(n * num_heads, [&](int64_t task) {
      const int64_t t = task / num_heads, h = task % num_heads;
      kernels::attend(s.q + t * width + h * hd, s.caches[t]->head(layer, h / group), s.key_first[t],
                      s.key_last[t], hd, scale, softcap, out + t * width + h * hd);
    });
    return;
  }
  const int64_t tiles = (n + kAttentionTile - 1) / kAttentionTile;
  pool.run(tiles * num_heads, [&](int64_t task) {
    const int64_t t0 = task / num_heads * kAttentionTile, h = task % num_heads;
    const int64_t m = std::min(kAttentionTile, n - t0);
    const float* q = s.q + t0 * width + h * hd;
    float* o = out + t0 * width + h * hd;
    const kernels::KVRows kv = s.caches[t0]->head(layer, h / group);
    if (s.key_last[t0 + m - 1] - s.key_first[t0] < kMaxBlockedKeys) {
      kernels::attend_rows(q, width, m, kv, s.key_first + t0, s.key_last + t0, hd, scale, softcap, o, width);
      return;
    }
    for (int64_t i = 0; i < m; ++i)
      kernels::attend(q + i * width, kv, s.key_first[t0 + i], s.key_last[t0 + i], hd, scale, softcap,
                      o + i * width);
  });
}

}  // namespace ge::nn
