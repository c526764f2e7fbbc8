// vdpbf16ps kernels for BF16 weights. One instruction multiplies 32 bf16 weight/activation pairs and
// accumulates them in f32. Activations are f32, so each is split into hi = bf16(x) and lo = bf16(x - hi):
// w*hi + w*lo carries 16 significant bits of x (relative error <= 2^-16 per product), where bf16(x)
// alone carries 8 and pushes the logits ~5e-3 off.
//
// Only the functions marked GE_AVX512BF16 use those instructions; the rest of the file is baseline x86-64
// so that the binary still loads and runs on CPUs without them.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source and then warn about
// it at every call site (GCC PR 105593, fixed in 12.3); the warning is about the header, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/matmul_internal.h"

#define GE_AVX512BF16 __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

namespace ge::kernels::detail {
namespace {

constexpr size_t kStep = 32;  // bf16 elements per zmm
constexpr size_t kTileRows = 4;
constexpr size_t kTileTokens = 6;

// hi and lo parts of every token's activations, each row padded with zeros to a whole number of steps.
struct SplitActivations {
  std::vector<uint16_t> hi, lo;
  size_t stride = 0;
};

GE_AVX512BF16 void split_token(const float* x, size_t k, size_t stride, uint16_t* hi, uint16_t* lo) {
  for (size_t i = 0; i < stride; i += 16) {
    const size_t left = i < k ? std::min<size_t>(16, k - i) : 0;
    const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1), x + i);
    const __m256bh h = _mm512_cvtneps_pbh(v);
    const __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, _mm512_cvtpbh_ps(h)));
    std::memcpy(hi + i, &h, sizeof(h));
    std::memcpy(lo + i, &l, sizeof(l));
  }
}

void split_activations(ThreadPool& pool, const float* x, int64_t n_tokens, size_t k, SplitActivations& s) {
  s.stride = (k + kStep - 1) / kStep * kStep;
  s.hi.resize(static_cast<size_t>(n_tokens) * s.stride);
  s.lo.resize(s.hi.size());
  pool.run(n_tokens, [&](int64_t t) {
    const size_t offset = static_cast<size_t>(t) * s.stride;
    split_token(x + static_cast<size_t>(t) * k, k, s.stride, s.hi.data() + offset, s.lo.data() + offset);
  });
}

// Where a tile reads and writes: weight rows at stride k, the tokens' hi and lo parts at x_stride.
struct TileArgs {
  const uint16_t* w;
  const uint16_t* hi;
  const uint16_t* lo;
  size_t k, x_stride;
  float* y;
  size_t y_stride;
};

// y[t * y_stride + r] = dot(w row r, x row t) for R weight rows and T tokens.
template <size_t R, size_t T>
GE_AVX512BF16 __attribute__((noinline)) void dot_tile(const TileArgs& a) {
  __m512 acc[R][T];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  // One loop for whole and partial steps: a helper taking acc by reference made GCC keep the
  // accumulators in memory. Masked weight loads never touch bytes past the row (the last row may end the
  // mmapped file); the zero padding of hi/lo keeps the masked-off lanes at 0.
  for (size_t i = 0; i < a.k; i += kStep) {
    const size_t left = a.k - i;
    const __mmask32 mask = left >= kStep ? ~__mmask32{0} : static_cast<__mmask32>((1u << left) - 1);
    __m512bh wv[R];
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r)
      wv[r] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, a.w + r * a.k + i));
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) {
      const __m512bh hi = reinterpret_cast<__m512bh>(_mm512_loadu_si512(a.hi + t * a.x_stride + i));
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], hi);
      const __m512bh lo = reinterpret_cast<__m512bh>(_mm512_loadu_si512(a.lo + t * a.x_stride + i));
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv[r], lo);
    }
  }

#pragma GCC unroll 16
  for (size_t t = 0; t < T; ++t)
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) a.y[t * a.y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

template <size_t R, size_t... I>
constexpr auto dot_tile_table(std::index_sequence<I...>) {
  return std::array<void (*)(const TileArgs&), sizeof...(I)>{&dot_tile<R, I + 1>...};
}

// dot_tile<R, T> for every token count T in [1, kTileTokens], indexed by T - 1: the last token tile's
// size is known only at run time.
template <size_t R>
constexpr auto kDotTiles = dot_tile_table<R>(std::make_index_sequence<kTileTokens>());

// Output rows [row_begin, row_end) for all tokens. Token tiles run outermost, so the task's weight rows
// (sized by rows_per_task to stay in L2) are reused by every token tile.
void matmul_rows(const uint16_t* w, size_t k, const SplitActivations& x, size_t n_tokens, float* y,
                 size_t rows, size_t row_begin, size_t row_end) {
  for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    const size_t tile = std::min(kTileTokens, n_tokens - t0) - 1;
    TileArgs a{nullptr, x.hi.data() + t0 * x.stride, x.lo.data() + t0 * x.stride, k, x.stride, nullptr, rows};
    size_t r = row_begin;
    for (; r + kTileRows <= row_end; r += kTileRows) {
      a.w = w + r * k;
      a.y = y + t0 * rows + r;
      kDotTiles<kTileRows>[tile](a);
    }
    for (; r < row_end; ++r) {
      a.w = w + r * k;
      a.y = y + t0 * rows + r;
      kDotTiles<1>[tile](a);
    }
  }
}

}  // namespace

bool cpu_has_avx512bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return has;
}

void matmul_avx512bf16(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  const size_t k = static_cast<size_t>(w.cols());
  const int64_t rows = w.rows();
  // Reused across calls: the engine calls matmul ~100 times per token with a handful of shapes.
  thread_local SplitActivations scratch;
  // A lambda naming the thread_local would see each worker's own (empty) copy; bind the caller's.
  SplitActivations& split = scratch;
  split_activations(pool, x, n_tokens, k, split);
  const auto* weights = reinterpret_cast<const uint16_t*>(w.data);
  const int64_t chunk = rows_per_task(rows, w.row_bytes(), pool.size(), kTileRows);
  pool.run((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    matmul_rows(weights, k, split, static_cast<size_t>(n_tokens), y, static_cast<size_t>(rows),
                static_cast<size_t>(begin), static_cast<size_t>(std::min(rows, begin + chunk)));
  });
}

}  // namespace ge::kernels::detail
