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
#ifndef GE_R
#define GE_R 4
#define GE_T 6
#define GE_T2 2
#define GE_KB 1024
#endif
constexpr size_t kTileRows = GE_R;
constexpr size_t kTileTokens = kLanes >= 16 ? GE_T : GE_T2;
// Prefill blocks the K loop so that a token tile's activations stay in L1 while the rows stream past.
constexpr size_t kKBlock = GE_KB;
static_assert(kKBlock % 64 == 0, "a K block must be a whole number of steps on every target");

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

// Where a tile reads and writes: R weight rows from w, T token rows from x, outputs into y.
template <class Format>
struct TileArgs {
  const typename Format::T* w;
  size_t w_stride;
  const float* x;
  size_t x_stride;
  float* y;
  size_t y_stride;
  size_t k_begin, k_vec_end, k_end;  // [k_begin, k_vec_end) by vectors, then scalars up to k_end
  bool accumulate;                   // add to y (later K blocks) or overwrite it (the first)
};

template <class Format, size_t R, size_t T>
HWY_NOINLINE void DotTile(const TileArgs<Format>& a) {
  const DF d;
  const typename Format::T* HWY_RESTRICT w = a.w;
  const float* HWY_RESTRICT x = a.x;
  VF acc[R][T];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);

  for (size_t k = a.k_begin; k < a.k_vec_end; k += kStep) {
#pragma GCC unroll 16
    for (size_t half = 0; half < 2; ++half) {
      VF wv[R];
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) wv[r] = Format::LoadHalf(d, w + r * a.w_stride + k, half);
#pragma GCC unroll 16
      for (size_t t = 0; t < T; ++t) {
        const VF xv = hn::LoadU(d, x + t * a.x_stride + k + half * kLanes);
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
      for (size_t k = a.k_vec_end; k < a.k_end; ++k)
        sum += x[t * a.x_stride + k] * Format::ToFloat(w + r * a.w_stride + k);
      float& out = a.y[t * a.y_stride + r];
      out = a.accumulate ? out + sum : sum;
    }
  }
}

template <class Format, size_t R, size_t... I>
constexpr auto DotTileTable(std::index_sequence<I...>) {
  return std::array<void (*)(const TileArgs<Format>&), sizeof...(I)>{&DotTile<Format, R, I + 1>...};
}

// DotTile<R, t> for a token count t in [1, kTileTokens] known only at run time (the last token tile).
template <class Format, size_t R>
void DotTileTokens(size_t tokens, const TileArgs<Format>& a) {
  static constexpr auto kTable = DotTileTable<Format, R>(std::make_index_sequence<kTileTokens>());
  kTable[tokens - 1](a);
}

template <class Format>
struct Problem {
  const typename Format::T* w;
  size_t k;  // in-dim
  const float* x;
  int64_t n_tokens;
  float* y;
  size_t rows;
  size_t k_block;
};

template <class Format>
void MatmulRows(const Problem<Format>& p, size_t row_begin, size_t row_end) {
  const size_t k_vec = p.k / kStep * kStep;
  const size_t n_tokens = static_cast<size_t>(p.n_tokens);
  for (size_t kb = 0; kb < p.k; kb += p.k_block) {
    const size_t kb_end = std::min(p.k, kb + p.k_block);
    for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
      const size_t tokens = std::min(kTileTokens, n_tokens - t0);
      TileArgs<Format> a{nullptr, p.k, p.x + t0 * p.k,          p.k,    nullptr,
                         p.rows,  kb,  std::min(kb_end, k_vec), kb_end, kb > 0};
      size_t r = row_begin;
      for (; r + kTileRows <= row_end; r += kTileRows) {
        a.w = p.w + r * p.k;
        a.y = p.y + t0 * p.rows + r;
        DotTileTokens<Format, kTileRows>(tokens, a);
      }
      for (; r < row_end; ++r) {
        a.w = p.w + r * p.k;
        a.y = p.y + t0 * p.rows + r;
        DotTileTokens<Format, 1>(tokens, a);
      }
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
  // With a single token tile nothing is reused across K blocks, and blocking would only break the
  // weight rows' sequential streams.
  const size_t k_block = static_cast<size_t>(n_tokens) <= kTileTokens ? k : kKBlock;
  const Problem<Format> p{reinterpret_cast<const typename Format::T*>(w.data),
                          k,
                          xs,
                          n_tokens,
                          y,
                          static_cast<size_t>(rows),
                          k_block};
  const int64_t chunk = detail::rows_per_task(rows, w.row_bytes(), pool.size(), kTileRows);
  pool.run((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    MatmulRows(p, static_cast<size_t>(begin), static_cast<size_t>(std::min(rows, begin + chunk)));
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
