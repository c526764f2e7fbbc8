// vdpbf16ps kernel for BF16 weights with activations rounded to bf16 (Precision::kReducedActivations). One
// vdpbf16ps multiplies 16 pairs of bf16 and adds them to 16 f32 sums: twice the products of an f32 FMA.
//
// Tiles are outer products: a zmm holds one bf16 pair (elements 2p, 2p + 1) of 16 tokens, a weight row's
// pair is broadcast to all lanes, and each accumulator gathers the outputs of one row for 16 tokens. A k
// step then loads B activation vectors and R 4-byte weight pairs for R x B instructions, and no
// accumulator needs a horizontal sum at the end, which dot-product tiles (both operands along k) would
// pay for every output.
//
// Only the functions marked GE_AVX512BF16 use those instructions; the rest of the file is baseline x86-64
// so that the binary still loads and runs on CPUs without them.
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)
#include "kernels/avx512_intrinsics.h"

#include <hwy/aligned_allocator.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#define GE_AVX512BF16 __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

namespace ge::kernels::detail {
namespace {

constexpr size_t kBlockTokens = 16;  // f32 lanes per zmm: the tokens one accumulator covers
// 6 rows x 4 token blocks = 24 accumulators, leaving 8 of the 32 zmm registers for the four activation
// vectors and the broadcast weight pair. 64 tokens per tile read a 64-token prompt's weights once: this
// measured 6-11% faster than 12 rows x 2 blocks on bench/matmul_bench.cpp's 64-token prefill shapes, and
// within 2% or faster at 256 tokens.
constexpr size_t kTileRows = 6;
constexpr size_t kTileBlocks = 4;
constexpr size_t kTileTokens = kTileBlocks * kBlockTokens;
constexpr size_t kPairsPerPackTask = 64;
// Activation pairs per k block (see dot_tiles): 1024 pairs of 64 tokens are 256 KiB.
constexpr size_t kMaxBlockPairs = 1024;

// Activations rounded to bf16, as pairs[p * n_pad + t] = (x[t][2p], x[t][2p + 1]) packed into a u32 (the
// even element in the low half, as vdpbf16ps pairs them). Tokens [n_tokens, n_pad) and the odd element
// past an odd k are zeros; 64-byte alignment keeps every token block's load within one cache line.
struct PackedActivations {
  hwy::AlignedFreeUniquePtr<uint32_t[]> pairs;
  size_t capacity = 0;
  size_t k_pairs = 0, n_pad = 0;
};

// Transposes the 16 x 16 matrix whose row i is m[i], in registers: unpacks and in-lane shuffles transpose
// the 4 x 4 blocks within each 128-bit lane, then two rounds of 128-bit lane shuffles move the blocks.
GE_AVX512BF16 inline void transpose_16x16(__m512 m[kBlockTokens]) {
  __m512 t[kBlockTokens];
  for (size_t i = 0; i < kBlockTokens; i += 2) {
    t[i] = _mm512_unpacklo_ps(m[i], m[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(m[i], m[i + 1]);
  }
  for (size_t i = 0; i < kBlockTokens; i += 4) {
    m[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    m[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    m[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    m[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // m[4i + j] now holds, in lane c, rows 4i..4i+3 of column 4c + j.
  for (size_t j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(m[j], m[4 + j], 0x88);            // lanes 0, 2 of rows 0-7
    t[4 + j] = _mm512_shuffle_f32x4(m[j], m[4 + j], 0xDD);        // lanes 1, 3 of rows 0-7
    t[8 + j] = _mm512_shuffle_f32x4(m[8 + j], m[12 + j], 0x88);   // lanes 0, 2 of rows 8-15
    t[12 + j] = _mm512_shuffle_f32x4(m[8 + j], m[12 + j], 0xDD);  // lanes 1, 3 of rows 8-15
  }
  for (size_t j = 0; j < 4; ++j) {
    m[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    m[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    m[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
    m[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
  }
}

// bf16 pairs p .. p + 15 of one token's activations, as the bits of 16 floats (the transpose that
// follows moves 32-bit lanes only). Rounded to nearest even like f32_to_bf16, but, as vdpbf16ps does with
// its inputs, denormals become zeros. Elements past k read as zeros.
GE_AVX512BF16 inline __m512 bf16_pairs(const float* x, size_t k, size_t p) {
  const size_t i = 2 * p;
  const auto mask = static_cast<__mmask32>((uint64_t{1} << std::min(k - i, 2 * kBlockTokens)) - 1);
  const __m512 lo = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask), x + i);
  const __m512 hi = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask >> 16), x + i + kBlockTokens);
  return reinterpret_cast<__m512>(_mm512_cvtne2ps_pbh(hi, lo));
}

// Packs pairs [p, min(p + 16, p_end)) of tokens [t0, t0 + 16), the tokens from n_tokens on as zeros:
// converted token by token, then transposed in registers into one aligned store per pair.
GE_AVX512BF16 void pack_square(const float* x, size_t k, size_t n_tokens, size_t t0, size_t p, size_t p_end,
                               PackedActivations& packed) {
  __m512 m[kBlockTokens];
  for (size_t t = 0; t < kBlockTokens; ++t)
    m[t] = t0 + t < n_tokens ? bf16_pairs(x + (t0 + t) * k, k, p) : _mm512_setzero_ps();
  transpose_16x16(m);
  uint32_t* out = packed.pairs.get() + p * packed.n_pad + t0;
  for (size_t j = 0; j < std::min(kBlockTokens, p_end - p); ++j)
    _mm512_store_ps(out + j * packed.n_pad, m[j]);
}

// Each task packs a range of pairs for every token, so no two threads write the same cache line.
void pack_activations(ThreadPool& pool, const float* x, size_t n_tokens, size_t k,
                      PackedActivations& packed) {
  static_assert(kPairsPerPackTask % kBlockTokens == 0);
  packed.k_pairs = (k + 1) / 2;
  packed.n_pad = (n_tokens + kBlockTokens - 1) / kBlockTokens * kBlockTokens;
  const size_t size = packed.k_pairs * packed.n_pad;
  if (size > packed.capacity) {
    packed.pairs = hwy::AllocateAligned<uint32_t>(size);
    packed.capacity = size;
  }
  const int64_t n_tasks = static_cast<int64_t>((packed.k_pairs + kPairsPerPackTask - 1) / kPairsPerPackTask);
  pool.run(n_tasks, [&](int64_t task) {
    const size_t p_begin = static_cast<size_t>(task) * kPairsPerPackTask;
    const size_t p_end = std::min(packed.k_pairs, p_begin + kPairsPerPackTask);
    for (size_t t0 = 0; t0 < packed.n_pad; t0 += kBlockTokens)
      for (size_t p = p_begin; p < p_end; p += kBlockTokens)
        pack_square(x, k, n_tokens, t0, p, p_end, packed);
  });
}

// Where a tile reads and writes: R weight rows of k elements at w_row_stride, B token blocks of packed
// activations, the sums of row r for token t in staged[r * staged_row_stride + t] (see matmul_rows). It
// multiplies pairs [pair_begin, pair_end) only, and adds to the staged sums if `accumulate`, else
// overwrites them.
struct TileArgs {
  const uint16_t* w = nullptr;
  size_t k = 0, w_row_stride = 0;
  const uint32_t* x = nullptr;
  size_t x_pair_stride = 0;
  size_t pair_begin = 0, pair_end = 0;
  bool accumulate = false;
  float* staged = nullptr;
  size_t staged_row_stride = 0;
};

// The R x (16 B) outputs of one tile (see TileArgs).
template <size_t R, size_t B>
GE_AVX512BF16 __attribute__((noinline)) void dot_tile(const TileArgs& a) {
  __m512 acc[B][R];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b) {
      float* sums = a.staged + r * a.staged_row_stride + b * kBlockTokens;
      acc[b][r] = a.accumulate ? _mm512_load_ps(sums) : _mm512_setzero_ps();
    }

  // One k step: weight pair p of each row (weight_pair(r)) times activation pair p of each token.
  const auto step = [&](const uint32_t* x, auto weight_pair) GE_AVX512BF16 __attribute__((always_inline)) {
    __m512bh xv[B];
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b)
      xv[b] = reinterpret_cast<__m512bh>(_mm512_load_si512(x + b * kBlockTokens));
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) {
      const __m512bh wv = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(weight_pair(r))));
#pragma GCC unroll 16
      for (size_t b = 0; b < B; ++b) acc[b][r] = _mm512_dpbf16_ps(acc[b][r], wv, xv[b]);
    }
  };
  const size_t whole_pairs = std::min(a.pair_end, a.k / 2);
  const uint32_t* x = a.x + a.pair_begin * a.x_pair_stride;
  for (size_t p = a.pair_begin; p < whole_pairs; ++p, x += a.x_pair_stride) {
    const auto whole_pair = [&](size_t r) GE_AVX512BF16 __attribute__((always_inline)) {
      uint32_t pair;
      std::memcpy(&pair, a.w + r * a.w_row_stride + 2 * p, 4);
      return pair;
    };
    step(x, whole_pair);
  }
  // An odd k ends in half a pair: reading the next bf16 would pass the end of the last row (and of an
  // mmapped file), and even times a zero activation an Inf or NaN there would spoil the sum.
  if (a.pair_end > whole_pairs) {
    const auto half_pair = [&](size_t r) GE_AVX512BF16 __attribute__((always_inline)) {
      return uint32_t{a.w[r * a.w_row_stride + a.k - 1]};
    };
    step(x, half_pair);
  }

#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b)
      _mm512_store_ps(a.staged + r * a.staged_row_stride + b * kBlockTokens, acc[b][r]);
}

// Copies rows [0, n_rows) x tokens [0, n_tokens) of staged outputs (see TileArgs) to y[t * y_token_stride
// + r], a transposed 16 x 16 square at a time: each token's 16 outputs are then one store.
GE_AVX512BF16 void unstage(const float* staged, size_t n_rows, size_t n_tokens, float* y,
                           size_t y_token_stride) {
  for (size_t r0 = 0; r0 < n_rows; r0 += kBlockTokens) {
    const size_t square_rows = std::min(kBlockTokens, n_rows - r0);
    const auto rows = static_cast<__mmask16>((1u << square_rows) - 1);
    for (size_t t0 = 0; t0 < n_tokens; t0 += kBlockTokens) {
      __m512 m[kBlockTokens];
      for (size_t i = 0; i < kBlockTokens; ++i)
        m[i] = i < square_rows ? _mm512_load_ps(staged + (r0 + i) * kTileTokens + t0) : _mm512_setzero_ps();
      transpose_16x16(m);
      for (size_t t = 0; t < std::min(kBlockTokens, n_tokens - t0); ++t)
        _mm512_mask_storeu_ps(y + (t0 + t) * y_token_stride + r0, rows, m[t]);
    }
  }
}

using DotTile = void (*)(const TileArgs&);

template <size_t R, size_t... B>
constexpr std::array<DotTile, sizeof...(B)> dot_tiles_of_height(std::index_sequence<B...>) {
  return {&dot_tile<R, B + 1>...};
}

template <size_t... R>
constexpr auto dot_tile_table(std::index_sequence<R...>) {
  return std::array{dot_tiles_of_height<R + 1>(std::make_index_sequence<kTileBlocks>())...};
}

// dot_tile<R, B> indexed by [R - 1][B - 1]: leftover rows and the last token tile's blocks are only
// known at run time.
constexpr auto kDotTiles = dot_tile_table(std::make_index_sequence<kTileRows>());

// Runs `tile` over pairs [0, k_pairs) in k blocks of at most kMaxBlockPairs, for `tiles` tiles whose
// first rows are adjacent (tile j from w + j * k, staging at staged + j * kTileTokens). Every tile
// multiplies one block before any moves on to the next: the tiles share the block's activations, which
// then stay in L2. At k = 6912 a whole activation tile (884 KiB) does not, and 1152 x 6912 x 256 ran
// ~12% slower without blocks; shorter blocks than 1024 pairs slowed k = 1152 down by ~5%.
void dot_tiles(TileArgs a, DotTile tile, size_t tiles, size_t k_pairs, const uint16_t* w, float* staged) {
  const size_t n_blocks = (k_pairs + kMaxBlockPairs - 1) / kMaxBlockPairs;
  const size_t block = (k_pairs + n_blocks - 1) / n_blocks;
  for (a.pair_begin = 0; a.pair_begin < k_pairs; a.pair_begin += block) {
    a.pair_end = std::min(k_pairs, a.pair_begin + block);
    a.accumulate = a.pair_begin > 0;
    for (size_t j = 0; j < tiles; ++j) {
      a.w = w + j * a.k;
      a.staged = staged + j * kTileTokens;
      tile(a);
    }
  }
}

// Output rows [row_begin, row_end) for all tokens, cut into kTileRows stripes (see RowStripes): they
// matter here too, prefill from weights streamed out of DRAM ran ~1.5x faster with them at 16 tokens.
// Token tiles run outermost, so every token tile after the first finds the task's weights in L2.
//
// Tiles leave their outputs in `staged`, and unstage() writes them to y for 16 adjacent tiles at once:
// each stripe's 16 rows are then one transposed square, one store per token. A tile transposing and
// storing its own 6 rows (one row from each stripe) took ~12% of the time at k = 640.
void matmul_rows(const uint16_t* w, size_t k, const PackedActivations& x, size_t n_tokens, float* y,
                 size_t rows, size_t row_begin, size_t row_end) {
  constexpr size_t kGroupTiles = kBlockTokens;
  constexpr size_t kStripeStride = kGroupTiles * kTileTokens;  // staged floats per stripe
  alignas(64) float staged[kTileRows * kStripeStride];
  const RowStripes stripes(row_begin, row_end, kTileRows);
  for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    const size_t tile_tokens = std::min(kTileTokens, n_tokens - t0);
    const size_t blocks = (tile_tokens + kBlockTokens - 1) / kBlockTokens;
    float* y_tile = y + t0 * rows;
    TileArgs a{.k = k,
               .w_row_stride = stripes.stripe * k,
               .x = x.pairs.get() + t0,
               .x_pair_stride = x.n_pad,
               .staged_row_stride = kStripeStride};
    for (size_t j0 = 0; j0 < stripes.stripe; j0 += kGroupTiles) {
      const size_t group = std::min(kGroupTiles, stripes.stripe - j0);
      dot_tiles(a, kDotTiles[kTileRows - 1][blocks - 1], group, x.k_pairs, w + (row_begin + j0) * k, staged);
      for (size_t i = 0; i < kTileRows; ++i) {
        const size_t row = row_begin + i * stripes.stripe + j0;
        unstage(staged + i * kStripeStride, group, tile_tokens, y_tile + row, rows);
      }
    }
    if (const size_t leftover = row_end - stripes.leftover_begin; leftover > 0) {
      a.w_row_stride = k;
      a.staged_row_stride = kTileTokens;
      dot_tiles(a, kDotTiles[leftover - 1][blocks - 1], 1, x.k_pairs, w + stripes.leftover_begin * k, staged);
      unstage(staged, leftover, tile_tokens, y_tile + stripes.leftover_begin, rows);
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
  // Reused across calls: the engine calls matmul ~100 times per forward pass with a handful of shapes.
  thread_local PackedActivations scratch;
  // A lambda naming the thread_local would see each worker's own (empty) copy; bind the caller's.
  PackedActivations& packed = scratch;
  pack_activations(pool, x, static_cast<size_t>(n_tokens), k, packed);
  const auto* weights = reinterpret_cast<const uint16_t*>(w.data);
  const bool reused = static_cast<size_t>(n_tokens) > kTileTokens;
  const int64_t chunk = rows_per_task(rows, w.row_bytes(), pool.size(), kTileRows, reused);
  pool.run((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    matmul_rows(weights, k, packed, static_cast<size_t>(n_tokens), y, static_cast<size_t>(rows),
                static_cast<size_t>(begin), static_cast<size_t>(std::min(rows, begin + chunk)));
  });
}

}  // namespace ge::kernels::detail

#else  // not x86-64: no AVX512_BF16, matmul() never calls the kernel

namespace ge::kernels::detail {
bool cpu_has_avx512bf16() {
  return false;
}
void matmul_avx512bf16(ThreadPool&, const Tensor&, const float*, int64_t, float*) {}
}  // namespace ge::kernels::detail

#endif
