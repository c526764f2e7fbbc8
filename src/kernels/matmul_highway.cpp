// f32-FMA matmul kernels for every Highway target. A tile of weight rows x tokens keeps one vector
// accumulator per (row, token) pair, so each widened weight vector is reused across the tile's tokens and
// each activation vector across its rows; the horizontal sums happen once per tile.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_highway.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
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

// Where a tile reads and writes: R weight rows at w_row_stride, T token rows of x at stride k, outputs
// y[t * y_token_stride + r * y_row_stride].
template <class Format>
struct TileArgs {
  const typename Format::T* w;
  size_t w_row_stride;
  const float* x;
  size_t k;
  float* y;
  size_t y_row_stride, y_token_stride;
};

// The R x T dot products of one tile (see TileArgs).
template <class Format, size_t R, size_t T>
HWY_NOINLINE void DotTile(const TileArgs<Format>& a) {
  const DF d;
  const typename Format::T* HWY_RESTRICT w = a.w;
  const float* HWY_RESTRICT x = a.x;
  const size_t k = a.k;
  VF acc[R][T];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);

  const size_t k_vec = k / kStep * kStep;
  for (size_t i = 0; i < k_vec; i += kStep) {
#pragma GCC unroll 16
    for (size_t half = 0; half < 2; ++half) {
      VF wv[R];
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) wv[r] = Format::LoadHalf(d, w + r * a.w_row_stride + i, half);
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
      for (size_t i = k_vec; i < k; ++i) sum += x[t * k + i] * Format::ToFloat(w + r * a.w_row_stride + i);
      a.y[t * a.y_token_stride + r * a.y_row_stride] = sum;
    }
  }
}

template <class Format, size_t R, size_t... I>
constexpr auto DotTileTable(std::index_sequence<I...>) {
  return std::array<void (*)(const TileArgs<Format>&), sizeof...(I)>{&DotTile<Format, R, I + 1>...};
}

// DotTile<R, T> for every token count T in [1, kTileTokens], indexed by T - 1: the last token tile's
// size is known only at run time.
template <class Format, size_t R>
constexpr auto kDotTiles = DotTileTable<Format, R>(std::make_index_sequence<kTileTokens>());

// Output rows [row_begin, row_end) for all tokens, cut into kTileRows stripes (see RowStripes). Token
// tiles run outermost, so every token tile after the first finds the task's weights in L2.
template <class Format>
void MatmulRows(const typename Format::T* w, size_t k, const float* x, size_t n_tokens, float* y, size_t rows,
                size_t row_begin, size_t row_end) {
  const detail::RowStripes stripes(row_begin, row_end, kTileRows);
  for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    const size_t tile = std::min(kTileTokens, n_tokens - t0) - 1;
    TileArgs<Format> a{nullptr, stripes.stripe * k, x + t0 * k, k, nullptr, stripes.stripe, rows};
    for (size_t r = row_begin; r < row_begin + stripes.stripe; ++r) {
      a.w = w + r * k;
      a.y = y + t0 * rows + r;
      kDotTiles<Format, kTileRows>[tile](a);
    }
    for (size_t r = stripes.leftover_begin; r < row_end; ++r) {
      a.w = w + r * k;
      a.y = y + t0 * rows + r;
      kDotTiles<Format, 1>[tile](a);
    }
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
  const bool reused = static_cast<size_t>(n_tokens) > kTileTokens;
  const int64_t chunk = detail::rows_per_task(rows, w.row_bytes(), pool.size(), kTileRows, reused);
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
