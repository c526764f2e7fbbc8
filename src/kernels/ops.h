// Element-wise and per-row operations of a transformer, on f32 activations. Weights (norm scales,
// embedding rows) are read in their stored dtype.
#pragma once
#include <cstdint>

#include "tensor/tensor.h"

namespace ge::kernels {

// Widens (or dequantizes: Q8_0, Q4_0) row `row` of a 2-D weight tensor to f32 and multiplies it by `scale`.
void dequantize_row(const Tensor& t, int64_t row, float scale, float* out);

// Root-mean-square norm of each of `rows` rows of length n: out = x / sqrt(mean(x^2) + eps) * g, where
// g = 1 + w when `one_plus` (Gemma's offset parameterisation) and g = w otherwise. In-place allowed.
void rms_norm(const float* x, const Tensor& w, float eps, bool one_plus, int64_t rows, int64_t n, float* out);

// The same without a gain (transformers' RMSNorm with_scale=False): out = x / sqrt(mean(x^2) + eps).
void rms_norm_unscaled(const float* x, float eps, int64_t rows, int64_t n, float* out);

// LayerNorm of each of `rows` rows of length n: out = (x - mean) / sqrt(var + eps) * w + b, with the
// population variance (torch's layer_norm). In-place allowed.
void layer_norm(const float* x, const Tensor& w, const Tensor& b, float eps, int64_t rows, int64_t n, float* out);

// out = gelu_tanh(gate) * up, elementwise (the gated MLP of Gemma).
void gelu_tanh_mul(const float* gate, const float* up, int64_t n, float* out);
// out = gelu_tanh(x), elementwise (SigLIP's MLP). In-place allowed.
void gelu_tanh(const float* x, int64_t n, float* out);

// x = cap * tanh(x / cap), elementwise.
void soft_cap(float* x, int64_t n, float cap);

// out += x, elementwise.
void add_inplace(float* out, const float* x, int64_t n);

// Rotary embedding, half-split (NeoX) layout: each head's pair is (x[i], x[i + head_dim/2]).
// cos/sin hold head_dim/2 values for this position.
void rope_neox(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);

// Keys and values of one KV head stored row by row; position p lives in row p % capacity, so a full
// cache (capacity >= every position) and a ring buffer share the same arithmetic.
struct KVRows {
  const std::byte* k;
  const std::byte* v;
  DType dtype;       // F32 or F16
  int64_t stride;    // elements between consecutive rows
  int64_t capacity;  // rows
};

// Attention of one query head over the keys at positions [first, last]: out = softmax(s) V with
// s = scale * q.K, soft-capped to softcap * tanh(s / softcap) when softcap > 0. Streams the keys with an
// online softmax, so no score buffer is needed whatever the context length.
void attend(const float* q, const KVRows& kv, int64_t first, int64_t last, int64_t head_dim, float scale,
            float softcap, float* out);

}  // namespace ge::kernels
