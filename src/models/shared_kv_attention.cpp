#include "models/shared_kv_attention.h"

#include <algorithm>

namespace ge::models {

SharedKvAttention SharedKvAttention::bind(const nn::LayerSource& s, const std::string& p, int64_t hidden,
                                          const Geometry& g, float eps) {
  const int64_t q = g.heads * g.head_dim, kv = g.kv_heads * g.head_dim;
  SharedKvAttention a;
  a.geometry = g;
  a.q_proj = s.linear(p + "self_attn.q_proj", q, hidden);
  a.q_norm = s.rms_norm(p + "self_attn.q_norm", g.head_dim, eps, false);
  if (g.cache_layer == g.layer) {  // a sharing layer's k/v weights, if shipped, are never used
    a.k_proj = s.linear(p + "self_attn.k_proj", kv, hidden);
    if (!g.v_is_k) a.v_proj = s.linear(p + "self_attn.v_proj", kv, hidden);
    a.k_norm = s.rms_norm(p + "self_attn.k_norm", g.head_dim, eps, false);
  }
  a.v_norm = nn::RMSNorm::unscaled(g.head_dim, eps);
  a.o_proj = s.linear(p + "self_attn.o_proj", hidden, q);
  return a;
}

void SharedKvAttention::operator()(kernels::ThreadPool& pool, const Step& step, const float* x, int64_t n,
                                   const Scratch& b, float* out) const {
  const Geometry& g = geometry;
  const int64_t q_width = g.heads * g.head_dim, kv_width = g.kv_heads * g.head_dim;
  q_proj(pool, x, n, b.q, step.precision);
  q_norm(b.q, n * g.heads, b.q);
  for (int64_t t = 0; t < n; ++t) step.rope.apply(g.layer, t, b.q + t * q_width, g.heads);
  if (g.cache_layer == g.layer) {
    k_proj(pool, x, n, b.k, step.precision);
    if (g.v_is_k)  // the raw k_proj output, before k_norm
      std::copy_n(b.k, n * kv_width, b.v);
    else
      v_proj(pool, x, n, b.v, step.precision);
    k_norm(b.k, n * g.kv_heads, b.k);
    v_norm(b.v, n * g.kv_heads, b.v);
    for (int64_t t = 0; t < n; ++t) {
      step.rope.apply(g.layer, t, b.k + t * kv_width, g.kv_heads);
      step.caches[t]->store(g.layer, step.positions[t], b.k + t * kv_width, b.v + t * kv_width);
    }
  }
  // The ring of a sliding layer holds window + chunk - 1 rows: a chunk's keys never evict one its queries need.
  for (int64_t t = 0; t < n; ++t) {
    b.key_last[t] = step.positions[t];
    b.key_first[t] = g.sliding ? std::max<int64_t>(0, step.positions[t] - g.window + 1) : 0;
  }
  const nn::AttentionStep rows{b.q, n, step.caches, b.key_first, b.key_last, step.one_sequence};
  nn::attend_cached(pool, rows, g.cache_layer, g.heads, g.kv_heads, g.head_dim, 1.0f, 0.0f, b.attn);
  o_proj(pool, b.attn, n, out, step.precision);
}

}  // namespace ge::models
