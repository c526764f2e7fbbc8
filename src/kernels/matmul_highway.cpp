// f32-FMA matmul kernels for every Highway target. A tile of weight rows x tokens keeps one vector
// accumulator per (row, token) pair, so each widened weight vector is reused across the tile's tokens and
// each activation vector across its rows; the horizontal sums happen once per tile.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_highway.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/matmul_internal.h"
#include "tensor/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kLanes = hn::MaxLanes(DF());
// The K loop consumes two vectors of weights per row per step: one u32 load of 2*kLanes bf16 weights
// widens into two f32 vectors without any shuffle (see Bf16Format).
constexpr size_t kStep = 2 * kLanes;

// AVX-512 has 32 vector registers: a 4x6 tile (24 accumulators) leaves room for the weights and one
// activation vector. The 16-register targets get 4x2 (8 accumulators).
#ifndef GE_DR
#define GE_DR 4
#endif
constexpr size_t kTileRows = 4;
constexpr size_t kTileTokens = kLanes >= 16 ? 6 : 2;

struct F32Format {
  using T = float;
  static constexpr bool kPermutedX = false;
  static HWY_INLINE VF LoadHalf(DF d, const T* p, size_t half) { return hn::LoadU(d, p + half * kLanes); }
  static HWY_INLINE float ToFloat(const T* p) { return *p; }
};

struct F16Format {
  using T = hwy::float16_t;
  static constexpr bool kPermutedX = false;
  static HWY_INLINE VF LoadHalf(DF d, const T* p, size_t half) {
    return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, DF>(), p + half * kLanes));
  }
  static HWY_INLINE float ToFloat(const T* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return f16_to_f32(bits);
  }
};

// A u32 lane holds the bf16 pair (2j, 2j+1): shifting it left by 16 gives element 2j as f32 and masking
// the low half gives element 2j+1. That widens 2*kLanes weights with two cheap ALU ops instead of two
// cross-lane shuffles, at the price of reading x in the same even/odd order (PermuteForBf16).
struct Bf16Format {
  using T = hwy::bfloat16_t;
  static constexpr bool kPermutedX = true;
  static HWY_INLINE VF LoadHalf(DF d, const T* p, size_t half) {
    const hn::RebindToUnsigned<DF> du;
    const auto pairs = hn::LoadU(du, reinterpret_cast<const uint32_t*>(p));
    const auto widened = half == 0 ? hn::ShiftLeft<16>(pairs) : hn::And(pairs, hn::Set(du, 0xFFFF0000u));
    return hn::BitCast(d, widened);
  }
  static HWY_INLINE float ToFloat(const T* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return bf16_to_f32(bits);
  }
};

// y[t * y_stride + r] = dot(w row r, x row t) for R weight rows and T token rows, both at stride k.
template <class Format, size_t R, size_t T>
HWY_NOINLINE void DotTile(const typename Format::T* HWY_RESTRICT w, const float* HWY_RESTRICT x, size_t k,
                          float* HWY_RESTRICT y, size_t y_stride) {
  const DF d;
  VF acc[R][T];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);

  const size_t k_vec = k / kStep * kStep;
  for (size_t i = 0; i < k_vec; i += kStep) {
#ifdef GE_PF
    if (T == 1) {
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) hwy::Prefetch(w + r * k + i + GE_PF);
    }
#endif
#pragma GCC unroll 16
    for (size_t half = 0; half < 2; ++half) {
      VF wv[R];
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) wv[r] = Format::LoadHalf(d, w + r * k + i, half);
#pragma GCC unroll 16
      for (size_t t = 0; t < T; ++t) {
        const VF xv = hn::LoadU(d, x + t * k + i + half * kLanes);
#pragma GCC unroll 16
        for (size_t r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(wv[r], xv, acc[r][t]);
      }
    }
  }

#pragma GCC unroll 16
  for (size_t t = 0; t < T; ++t) {
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) {
      float sum = hn::GetLane(hn::SumOfLanes(d, acc[r][t]));
      for (size_t i = k_vec; i < k; ++i) sum += x[t * k + i] * Format::ToFloat(w + r * k + i);
      y[t * y_stride + r] = sum;
    }
  }
}

template <class Format>
using DotTileFn = void (*)(const typename Format::T*, const float*, size_t, float*, size_t);

template <class Format, size_t R, size_t... I>
constexpr auto DotTileTable(std::index_sequence<I...>) {
  return std::array<DotTileFn<Format>, sizeof...(I)>{&DotTile<Format, R, I + 1>...};
}

// DotTile<R, T> for every token count T in [1, kTileTokens], indexed by T - 1: the last token tile's
// size is known only at run time.
template <class Format, size_t R>
constexpr auto kDotTiles = DotTileTable<Format, R>(std::make_index_sequence<kTileTokens>());

// Output rows [row_begin, row_end) for all tokens. Token tiles run outermost, so the task's weight rows
// (sized by rows_per_task to stay in L2) are reused by every token tile.
template <class Format>
void MatmulRows(const typename Format::T* w, size_t k, const float* x, size_t n_tokens, float* y, size_t rows,
                size_t row_begin, size_t row_end) {
  for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    const size_t tile = std::min(kTileTokens, n_tokens - t0) - 1;
    const float* xt = x + t0 * k;
    float* yt = y + t0 * rows;
    size_t r = row_begin;
    for (; r + kTileRows <= row_end; r += kTileRows)
      kDotTiles<Format, kTileRows>[tile](w + r * k, xt, k, yt + r, rows);
    for (; r < row_end; ++r) kDotTiles<Format, 1>[tile](w + r * k, xt, k, yt + r, rows);
  }
}

// Reorders each whole kStep block of every token's activations to (even elements, odd elements), the
// order in which Bf16Format widens weights; the tail stays in natural order for the scalar loop.
void PermuteForBf16(ThreadPool& pool, const float* x, int64_t n_tokens, size_t k, float* out) {
  const size_t k_vec = k / kStep * kStep;
  pool.run(n_tokens, [&](int64_t t) {
    const float* src = x + static_cast<size_t>(t) * k;
    float* dst = out + static_cast<size_t>(t) * k;
    for (size_t b = 0; b < k_vec; b += kStep) {
      for (size_t j = 0; j < kLanes; ++j) {
        dst[b + j] = src[b + 2 * j];
        dst[b + kLanes + j] = src[b + 2 * j + 1];
      }
    }
    std::copy(src + k_vec, src + k, dst + k_vec);
  });
}

template <class Format>
void MatmulFormat(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  const size_t k = static_cast<size_t>(w.cols());
  const int64_t rows = w.rows();
  const float* xs = x;
  if constexpr (Format::kPermutedX) {
    // Reused across calls: the engine calls matmul ~100 times per token with a handful of shapes.
    thread_local std::vector<float> permuted;
    permuted.resize(static_cast<size_t>(n_tokens) * k);
    PermuteForBf16(pool, x, n_tokens, k, permuted.data());
    xs = permuted.data();
  }
  const auto* weights = reinterpret_cast<const typename Format::T*>(w.data);
  const int64_t chunk = detail::rows_per_task(rows, w.row_bytes(), pool.size(), kTileRows);
  pool.run((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    MatmulRows<Format>(weights, k, xs, static_cast<size_t>(n_tokens), y, static_cast<size_t>(rows),
                       static_cast<size_t>(begin), static_cast<size_t>(std::min(rows, begin + chunk)));
  });
}

void MatmulHighway(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  switch (w.dtype) {
    case DType::F32:
      return MatmulFormat<F32Format>(pool, w, x, n_tokens, y);
    case DType::F16:
      return MatmulFormat<F16Format>(pool, w, x, n_tokens, y);
    case DType::BF16:
      return MatmulFormat<Bf16Format>(pool, w, x, n_tokens, y);
    default:
      HWY_ABORT("matmul_highway: unsupported weight dtype");
  }
}

const char* TargetName() {
  return hwy::TargetName(HWY_TARGET);
}

}  // namespace ge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ge::kernels {
HWY_EXPORT(MatmulHighway);
HWY_EXPORT(TargetName);

namespace detail {
void matmul_highway(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulHighway)(pool, w, x, n_tokens, y);
}
const char* highway_target_name() {
  return HWY_DYNAMIC_DISPATCH(TargetName)();
}
}  // namespace detail
}  // namespace ge::kernels
#endif  // HWY_ONCE
