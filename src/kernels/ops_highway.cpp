// SIMD bodies of the element-wise ops whose cost shows in a profile: the tanh-GELU of the MLP, the soft-cap
// of 262,144 logits a token (std::tanh: 4.0 ms, this 0.15 ms; 6% of an E2B decode step), and the dot products /
// accumulations of attention. Dispatched at run time like the matmul kernels.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/ops_highway.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/ops.h"

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

HWY_INLINE float GeluTanhScalar(float g) {
  return 0.5f * g * (1.0f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}

template <class D>
HWY_INLINE hn::Vec<D> GeluTanhVec(D d, hn::Vec<D> g) {
  const auto half = hn::Set(d, 0.5f), one = hn::Set(d, 1.0f);
  const auto k0 = hn::Set(d, 0.7978845608028654f), k1 = hn::Set(d, 0.044715f);
  const auto inner = hn::Mul(k0, hn::MulAdd(hn::Mul(k1, hn::Mul(g, g)), g, g));
  return hn::Mul(hn::Mul(half, g), hn::Add(one, hn::Tanh(d, inner)));
}

void GeluTanhMul(const float* gate, const float* up, int64_t n, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes)
    hn::StoreU(hn::Mul(GeluTanhVec(d, hn::LoadU(d, gate + i)), hn::LoadU(d, up + i)), d, out + i);
  for (; i < n; ++i) out[i] = GeluTanhScalar(gate[i]) * up[i];
}

void SoftCap(float* x, int64_t n, float cap) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto c = hn::Set(d, cap), inv = hn::Set(d, 1.0f / cap);
  const auto capped = [&](hn::Vec<decltype(d)> v) { return hn::Mul(c, hn::Tanh(d, hn::Mul(v, inv))); };
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(capped(hn::LoadU(d, x + i)), d, x + i);
  if (i == n) return;
  // The tail through the same vector code, so that a value's result does not depend on where it sits (the
  // rows of a batched decode step must equal lone steps to the bit).
  HWY_ALIGN float tail[hn::MaxLanes(d)] = {};
  std::copy(x + i, x + n, tail);
  hn::Store(capped(hn::Load(d, tail)), d, tail);
  std::copy(tail, tail + (n - i), x + i);
}

void GeluTanh(const float* x, int64_t n, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(GeluTanhVec(d, hn::LoadU(d, x + i)), d, out + i);
  for (; i < n; ++i) out[i] = GeluTanhScalar(x[i]);
}

using DF = hn::ScalableTag<float>;

// Loads lanes of K or V rows in their cache type, widened to f32.
HWY_INLINE hn::Vec<DF> LoadF32(DF d, const float* p) { return hn::LoadU(d, p); }
HWY_INLINE hn::Vec<DF> LoadF32(DF d, const hwy::float16_t* p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<hwy::float16_t, DF>(), p));
}
HWY_INLINE float ToF32(float v) { return v; }
HWY_INLINE float ToF32(hwy::float16_t v) {
  uint16_t bits;
  std::memcpy(&bits, &v, 2);
  return f16_to_f32(bits);
}

template <class T>
float Dot(const float* a, const T* b, int64_t n) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    acc0 = hn::MulAdd(hn::LoadU(d, a + i), LoadF32(d, b + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(d, a + i + lanes), LoadF32(d, b + i + lanes), acc1);
  }
  for (; i + lanes <= n; i += lanes) acc0 = hn::MulAdd(hn::LoadU(d, a + i), LoadF32(d, b + i), acc0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
  for (; i < n; ++i) sum += a[i] * ToF32(b[i]);
  return sum;
}

// out = out * scale + p * v
template <class T>
void ScaleAddScaled(float* out, float scale, float p, const T* v, int64_t n) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto vs = hn::Set(d, scale), vp = hn::Set(d, p);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes)
    hn::StoreU(hn::MulAdd(vp, LoadF32(d, v + i), hn::Mul(vs, hn::LoadU(d, out + i))), d, out + i);
  for (; i < n; ++i) out[i] = out[i] * scale + p * ToF32(v[i]);
}

template <class T>
void AttendRows(const float* q, const T* k_rows, const T* v_rows, const KVRows& kv, int64_t first, int64_t last,
                int64_t head_dim, float scale, float softcap, float* out) {
  constexpr int64_t kBlock = 64;
  float scores[kBlock];
  float running_max = -std::numeric_limits<float>::infinity();
  float running_sum = 0.0f;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t start = first; start <= last; start += kBlock) {
    const int64_t count = std::min(kBlock, last - start + 1);
    float block_max = running_max;
    for (int64_t j = 0; j < count; ++j) {
      scores[j] = Dot(q, k_rows + ((start + j) % kv.capacity) * kv.stride, head_dim) * scale;
      if (softcap > 0) scores[j] = softcap * std::tanh(scores[j] / softcap);
      block_max = std::max(block_max, scores[j]);
    }
    // Rescale what was accumulated under the old maximum once, folded into the first key of the block.
    float correction = std::exp(running_max - block_max);
    running_sum *= correction;
    for (int64_t j = 0; j < count; ++j) {
      const float p = std::exp(scores[j] - block_max);
      running_sum += p;
      ScaleAddScaled(out, correction, p, v_rows + ((start + j) % kv.capacity) * kv.stride, head_dim);
      correction = 1.0f;
    }
    running_max = block_max;
  }
  ScaleAddScaled(out, 1.0f / running_sum, 0.0f, out, head_dim);
}

void Attend(const float* q, const KVRows& kv, int64_t first, int64_t last, int64_t head_dim, float scale,
            float softcap, float* out) {
  if (kv.dtype == DType::F16)
    AttendRows(q, reinterpret_cast<const hwy::float16_t*>(kv.k), reinterpret_cast<const hwy::float16_t*>(kv.v), kv,
               first, last, head_dim, scale, softcap, out);
  else
    AttendRows(q, reinterpret_cast<const float*>(kv.k), reinterpret_cast<const float*>(kv.v), kv, first, last,
               head_dim, scale, softcap, out);
}

}  // namespace ge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ge::kernels {

HWY_EXPORT(GeluTanhMul);
HWY_EXPORT(GeluTanh);
HWY_EXPORT(SoftCap);
HWY_EXPORT(Attend);

void gelu_tanh(const float* x, int64_t n, float* out) { HWY_DYNAMIC_DISPATCH(GeluTanh)(x, n, out); }

void soft_cap(float* x, int64_t n, float cap) { HWY_DYNAMIC_DISPATCH(SoftCap)(x, n, cap); }

void gelu_tanh_mul(const float* gate, const float* up, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(GeluTanhMul)(gate, up, n, out);
}

void attend(const float* q, const KVRows& kv, int64_t first, int64_t last, int64_t head_dim, float scale,
            float softcap, float* out) {
  HWY_DYNAMIC_DISPATCH(Attend)(q, kv, first, last, head_dim, scale, softcap, out);
}

}  // namespace ge::kernels
#endif  // HWY_ONCE
