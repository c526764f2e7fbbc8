// The attention of Gemma 3n and Gemma 4: learned q/k norms, a weightless v norm, scaling 1, RoPE per layer,
// keys and values written by the layers that own a cache and read by the last layers, which share an
// earlier layer's (Gemma 4's full layers may also take V as the raw K).
#pragma once
#include <span>
#include <string>

#include "kernels/thread_pool.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"
#include "nn/layer_source.h"
#include "nn/linear.h"

namespace ge::models {

struct SharedKvAttention {
  struct Geometry {
    int64_t layer = 0, cache_layer = 0;  // cache_layer != layer: the layer reads that layer's keys and values
    int64_t heads = 0, kv_heads = 0, head_dim = 0;
    bool sliding = false;
    int64_t window = 0;
    bool v_is_k = false;  // V is the raw k_proj output
  };
  // The step the layer runs in: its rows' positions and caches, its RoPE tables and precision.
  struct Step {
    const nn::RopeTables& rope;
    std::span<const int64_t> positions;
    std::span<nn::KVCache* const> caches;
    bool one_sequence;
    kernels::Precision precision;
  };
  // Buffers for n rows: q and attn heads * head_dim floats a row, k and v kv_heads * head_dim, the key
  // ranges one value a row.
  struct Scratch {
    float *q, *k, *v, *attn;
    int64_t *key_first, *key_last;
  };

  Geometry geometry;
  nn::Linear q_proj, k_proj, v_proj, o_proj;  // k/v unbound on sharing layers, v where V is K
  nn::RMSNorm q_norm, k_norm, v_norm;

  // Binds `<prefix>self_attn.*` (q/k norms multiply by their weights as stored).
  static SharedKvAttention bind(const nn::LayerSource& s, const std::string& prefix, int64_t hidden,
                                const Geometry& g, float eps);
  // out [n, hidden] = o_proj(attention(x)) for x [n, hidden].
  void operator()(kernels::ThreadPool& pool, const Step& step, const float* x, int64_t n, const Scratch& scratch,
                  float* out) const;
};

}  // namespace ge::models
