#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm.h"

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void SoftmaxRows(float* s, int64_t rows, int64_t n, int64_t ld, float scale) {
  const hn::ScalableTag<float> d;
  const auto lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    float max = *std::max_element(row, row + n);
    const auto vscale = hn::Set(d, scale), vshift = hn::Set(d, -scale * max);
    auto vsum = hn::Zero(d);
    int64_t i = 0;
    for (; i + lanes <= n; i += lanes) {
      const auto e = hn::Exp(d, hn::MulAdd(hn::LoadU(d, row + i), vscale, vshift));
      hn::StoreU(e, d, row + i);
      vsum = hn::Add(vsum, e);
    }
    float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
    for (; i < n; ++i) sum += row[i] = std::exp(scale * (row[i] - max));
    const auto inv = hn::Set(d, 1.0f / sum);
    for (i = 0; i + lanes <= n; i += lanes) hn::StoreU(hn::Mul(hn::LoadU(d, row + i), inv), d, row + i);
    for (; i < n; ++i) row[i] *= 1.0f / sum;
  }
}

}  // namespace ge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ge::kernels {

HWY_EXPORT(SoftmaxRows);

void softmax_rows(float* s, int64_t rows, int64_t n, int64_t ld, float scale) {
  HWY_DYNAMIC_DISPATCH(SoftmaxRows)(s, rows, n, ld, scale);
}

void attend_all(ThreadPool& pool, const float* q, const float* k, const float* v, int64_t n, int64_t heads,
                int64_t head_dim, float scale, float* out) {
  // 256 queries per task: large enough that packing K and V (n x head_dim each) is a few percent of the
  // block's products, small enough that the score rows of a task stay a few MB.
  constexpr int64_t kQueries = 256;
  const int64_t width = heads * head_dim, blocks = (n + kQueries - 1) / kQueries;
  pool.run(heads * blocks, [&](int64_t task) {
    const int64_t h = task / blocks, q0 = (task % blocks) * kQueries, m = std::min(kQueries, n - q0);
    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(kQueries * n));
    const MatrixView keys{k + h * head_dim, DType::F32, n, head_dim, width};
    gemm(q + q0 * width + h * head_dim, width, m, keys, /*w_k_major=*/false, scores.data(), n);
    softmax_rows(scores.data(), m, n, n, scale);
    const MatrixView values{v + h * head_dim, DType::F32, n, head_dim, width};
    gemm(scores.data(), n, m, values, /*w_k_major=*/true, out + q0 * width + h * head_dim, width);
  });
}

namespace {

// Cached positions [p0, p1] of one head as contiguous f32 rows (the ring wraps at kv.capacity).
void gather_rows(const std::byte* base, const KVRows& kv, int64_t p0, int64_t p1, int64_t head_dim,
                 float* out) {
  const size_t elem = kv.dtype == DType::F16 ? 2 : 4;
  for (int64_t p = p0; p <= p1; ++p) {
    const std::byte* row = base + static_cast<size_t>((p % kv.capacity) * kv.stride) * elem;
    float* dst = out + (p - p0) * head_dim;
    if (kv.dtype == DType::F16) {
      for (int64_t i = 0; i < head_dim; ++i) {
        uint16_t h;
        std::memcpy(&h, row + i * 2, 2);
        dst[i] = f16_to_f32(h);
      }
    } else {
      std::memcpy(dst, row, static_cast<size_t>(head_dim) * 4);
    }
  }
}

}  // namespace

void attend_rows(const float* q, int64_t ldq, int64_t m, const KVRows& kv, const int64_t* first,
                 const int64_t* last, int64_t head_dim, float scale, float softcap, float* out, int64_t ldo) {
  const int64_t p0 = *std::min_element(first, first + m), p1 = *std::max_element(last, last + m);
  const int64_t n = p1 - p0 + 1;
  thread_local std::vector<float> keys, values, scores;
  scores.resize(static_cast<size_t>(m * n));
  // An f32 cache whose rows [p0, p1] do not wrap is read in place; otherwise the rows are gathered.
  MatrixView k_rows, v_rows;
  if (kv.dtype == DType::F32 && p0 % kv.capacity + n <= kv.capacity) {
    const int64_t first = p0 % kv.capacity * kv.stride;
    k_rows = {reinterpret_cast<const float*>(kv.k) + first, DType::F32, n, head_dim, kv.stride};
    v_rows = {reinterpret_cast<const float*>(kv.v) + first, DType::F32, n, head_dim, kv.stride};
  } else {
    keys.resize(static_cast<size_t>(n * head_dim));
    values.resize(static_cast<size_t>(n * head_dim));
    gather_rows(kv.k, kv, p0, p1, head_dim, keys.data());
    gather_rows(kv.v, kv, p0, p1, head_dim, values.data());
    k_rows = {keys.data(), DType::F32, n, head_dim, head_dim};
    v_rows = {values.data(), DType::F32, n, head_dim, head_dim};
  }
  gemm(q, ldq, m, k_rows, /*w_k_major=*/false, scores.data(), n);
  // Keys a query does not see get the lowest finite score, whose exp is 0 (Highway's Exp takes any finite
  // input; -inf is outside its range).
  constexpr float kUnseen = -std::numeric_limits<float>::max();
  for (int64_t i = 0; i < m; ++i) {
    float* row = scores.data() + i * n;
    const int64_t lo = first[i] - p0, hi = last[i] - p0;
    for (int64_t j = 0; j < n; ++j) {
      const float s = row[j] * scale;
      row[j] = j < lo || j > hi ? kUnseen : softcap > 0 ? softcap * std::tanh(s / softcap) : s;
    }
  }
  softmax_rows(scores.data(), m, n, n, 1.0f);
  gemm(scores.data(), n, m, v_rows, /*w_k_major=*/true, out, ldo);
}

}  // namespace ge::kernels
#endif  // HWY_ONCE
