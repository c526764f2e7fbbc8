// vpdpbusd kernel for Q8_0 and Q4_0 weights with activations quantized to 8-bit blocks (Precision::
// kReducedActivations), as llama.cpp computes Q8_0 and Q4_0 products. Each token's activations are cut into
// blocks of 32 with the Q8_0 rule (scale = max|x| / 127, codes round(x / scale)), so that a weight block
// times an activation block is one integer dot product scaled by d_w * d_x. One vpdpbusd does 64 8-bit
// products: four times the products of an f32 FMA.
//
// Tiles are outer products, as in matmul_avx512bf16.cpp: a zmm holds four consecutive activation codes of
// 16 tokens, a weight row's four codes are broadcast to all lanes, and each accumulator gathers one row's
// outputs for 16 tokens. Integer sums cover one block; its scales then turn them into f32 sums.
//
// The two weight formats differ only in how a block's 32 codes are stored (see Q8_0Codes, Q4_0Codes): each
// tile unpacks every row's block to 32 signed bytes once, and everything else is shared.
//
// vpdpbusd multiplies unsigned by signed bytes. The weight codes are made unsigned by adding 128 (one xor
// after unpacking), and the 128 * sum(x codes) that this adds is subtracted by starting each block's integer
// sums at -128 * sum(x codes): a per-token constant computed once at packing, the same for every row.
//
// Only the functions marked GE_AVX512VNNI use those instructions; the rest of the file is baseline x86-64
// so that the binary still loads and runs on CPUs without them.
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)
#include "kernels/avx512_intrinsics.h"

#include <hwy/aligned_allocator.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu_features.h"
#include "kernels/quantize.h"
#include "tensor/dtype.h"

#define GE_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

namespace ge::kernels::detail {
namespace {

constexpr size_t kBlockTokens = 16;  // int32 lanes per zmm: the tokens one accumulator covers
constexpr size_t kQuadsPerBlock = kQuantBlock / 4;
// 3 rows x 4 token blocks need 12 integer and 12 f32 accumulators, which with the four activation vectors,
// the broadcast weights and the xor constant fill 30 of the 32 zmm registers. 64 tokens per tile read a
// 64-token prompt's weights once.
constexpr size_t kTileRows = 3;
constexpr size_t kTileBlocks = 4;
constexpr size_t kTileTokens = kTileBlocks * kBlockTokens;
constexpr size_t kBlocksPerPackTask = 8;

template <typename T>
struct AlignedArray {
  hwy::AlignedFreeUniquePtr<T[]> data;
  size_t capacity = 0;

  T* reserve(size_t size) {
    if (size > capacity) {
      data = hwy::AllocateAligned<T>(size);
      capacity = size;
    }
    return data.get();
  }
};

// The quantized activations, token-minor so that 16 tokens are one aligned load: for block b and token t,
// quads[(b * 8 + g) * n_pad + t] holds codes 4g .. 4g + 3 of the block (the first in the low byte, as
// vpdpbusd pairs them), scales[b * n_pad + t] its fp16-rounded scale and offsets[b * n_pad + t] the
// -128 * sum of its codes. Tokens [n_tokens, n_pad) are zeros throughout.
struct PackedActivations {
  AlignedArray<uint32_t> quads;
  AlignedArray<float> scales;
  AlignedArray<int32_t> offsets;
  size_t n_blocks = 0, n_pad = 0;
};

// x rounded half away from zero, as std::roundf: no rounding mode of vrndscaleps does that.
GE_AVX512VNNI inline __m512i round_half_away(__m512 x) {
  const __m512 truncated = _mm512_roundscale_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(x, truncated)), _mm512_set1_ps(0.5f),
                                            _CMP_GE_OQ);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
  const __m512 signed_one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0f)), sign));
  return _mm512_cvttps_epi32(_mm512_mask_add_ps(truncated, away, truncated, signed_one));
}

// One block of 32 activations, bit for bit as quantize_row_q8_0 quantizes it (same f32 scale, same
// rounding); the scale is returned as the f32 value of its fp16 rounding, which is what the block stores.
GE_AVX512VNNI void quantize_block(const float* x, uint32_t* quads, size_t quad_stride, float& scale,
                                  int32_t& offset) {
  const __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + kBlockTokens);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  scale = f16_to_f32(f32_to_f16(d));
  const __m512i codes_lo = round_half_away(_mm512_mul_ps(lo, _mm512_set1_ps(id)));
  const __m512i codes_hi = round_half_away(_mm512_mul_ps(hi, _mm512_set1_ps(id)));
  offset = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(codes_lo, codes_hi));
  alignas(16) uint32_t packed[kQuadsPerBlock];
  _mm_store_si128(reinterpret_cast<__m128i*>(packed), _mm512_cvtepi32_epi8(codes_lo));
  _mm_store_si128(reinterpret_cast<__m128i*>(packed + 4), _mm512_cvtepi32_epi8(codes_hi));
  for (size_t g = 0; g < kQuadsPerBlock; ++g) quads[g * quad_stride] = packed[g];
}

// Blocks [b_begin, b_end) of every token. Each task owns whole blocks, so no two threads write the same
// cache line (a block's row of quads for 16 tokens is one 64-byte line).
GE_AVX512VNNI void pack_blocks(const float* x, size_t k, size_t n_tokens, size_t b_begin, size_t b_end,
                               PackedActivations& packed) {
  const size_t n_pad = packed.n_pad;
  for (size_t t = 0; t < n_pad; ++t) {
    for (size_t b = b_begin; b < b_end; ++b) {
      uint32_t* quads = packed.quads.data.get() + b * kQuadsPerBlock * n_pad + t;
      float& scale = packed.scales.data[b * n_pad + t];
      int32_t& offset = packed.offsets.data[b * n_pad + t];
      if (t < n_tokens) {
        quantize_block(x + t * k + b * kQuantBlock, quads, n_pad, scale, offset);
      } else {
        for (size_t g = 0; g < kQuadsPerBlock; ++g) quads[g * n_pad] = 0;
        scale = 0.0f;
        offset = 0;
      }
    }
  }
}

void pack_activations(ThreadPool& pool, const float* x, size_t n_tokens, size_t k, PackedActivations& packed) {
  packed.n_blocks = k / kQuantBlock;
  packed.n_pad = (n_tokens + kBlockTokens - 1) / kBlockTokens * kBlockTokens;
  const size_t block_columns = packed.n_blocks * packed.n_pad;
  packed.quads.reserve(block_columns * kQuadsPerBlock);
  packed.scales.reserve(block_columns);
  packed.offsets.reserve(block_columns);
  const int64_t n_tasks = static_cast<int64_t>((packed.n_blocks + kBlocksPerPackTask - 1) / kBlocksPerPackTask);
  pool.run(n_tasks, [&](int64_t task) {
    const size_t b_begin = static_cast<size_t>(task) * kBlocksPerPackTask;
    pack_blocks(x, k, n_tokens, b_begin, std::min(packed.n_blocks, b_begin + kBlocksPerPackTask), packed);
  });
}

// The weight formats: bytes per block and the block's codes as 32 signed bytes, element j in byte j. Both
// start a block with the fp16 scale d.
struct Q8_0Codes {
  static constexpr size_t kBlockBytes = kQ8_0BlockBytes;
  GE_AVX512VNNI static __m256i codes(const std::byte* block) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  }
};

// Byte j holds q_j in its low nibble and q_{j+16} in its high one; the value is d * (q - 8).
struct Q4_0Codes {
  static constexpr size_t kBlockBytes = kQ4_0BlockBytes;
  GE_AVX512VNNI static __m256i codes(const std::byte* block) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i first_half = _mm_and_si128(packed, nibble);
    const __m128i second_half = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
    return _mm256_sub_epi8(_mm256_set_m128i(second_half, first_half), _mm256_set1_epi8(8));
  }
};

// A block's codes plus 128, as vpdpbusd's unsigned operand, in the quads that the tile broadcasts: unpacked
// once per row and block rather than once per broadcast.
template <typename Format>
GE_AVX512VNNI inline void unpack_unsigned_quads(const std::byte* block, uint32_t (&quads)[kQuadsPerBlock]) {
  const __m256i to_unsigned = _mm256_set1_epi8(static_cast<char>(0x80));
  _mm256_store_si256(reinterpret_cast<__m256i*>(quads), _mm256_xor_si256(Format::codes(block), to_unsigned));
}

// R weight rows, row r at w + r * w_row_stride bytes, times tokens [t0, t0 + n_tokens) of the packed
// activations (n_tokens <= 16 B), written to y[t * y_token_stride + r * y_row_stride] relative to the
// tile's first token and row.
struct TileArgs {
  const std::byte* w = nullptr;
  size_t w_row_stride = 0;
  const PackedActivations* x = nullptr;
  size_t t0 = 0, n_tokens = 0;
  float* y = nullptr;
  size_t y_token_stride = 0, y_row_stride = 0;
};

// Writes acc[b][r], row r's outputs for 16 tokens, into y's token-major rows. Lanes past n_tokens are
// padding and not written.
template <size_t R, size_t B>
GE_AVX512VNNI inline void store_tile(const TileArgs& a, const __m512 (&acc)[B][R]) {
  const __m512i lane_offsets = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(static_cast<int>(a.y_token_stride)));
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) {
    const size_t tokens = std::min(kBlockTokens, a.n_tokens - b * kBlockTokens);
    const auto mask = static_cast<__mmask16>((1u << tokens) - 1);
    float* y = a.y + b * kBlockTokens * a.y_token_stride;
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) _mm512_mask_i32scatter_ps(y + r * a.y_row_stride, mask, lane_offsets, acc[b][r], 4);
  }
}

// The R x (16 B) outputs of one tile (see TileArgs), over every block of the rows.
template <typename Format, size_t R, size_t B>
GE_AVX512VNNI __attribute__((noinline)) void dot_tile(const TileArgs& a) {
  const PackedActivations& x = *a.x;
  const size_t n_pad = x.n_pad;
  __m512 acc[B][R];
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b)
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) acc[b][r] = _mm512_setzero_ps();

  for (size_t block = 0; block < x.n_blocks; ++block) {
    const size_t column = block * n_pad + a.t0;
    const std::byte* w = a.w + block * Format::kBlockBytes;
    alignas(32) uint32_t w_quads[R][kQuadsPerBlock];
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) unpack_unsigned_quads<Format>(w + r * a.w_row_stride, w_quads[r]);
    __m512i sums[B][R];
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b) {
      const __m512i offset = _mm512_load_si512(x.offsets.data.get() + column + b * kBlockTokens);
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) sums[b][r] = offset;
    }
    const uint32_t* quads = x.quads.data.get() + block * kQuadsPerBlock * n_pad + a.t0;
#pragma GCC unroll 8
    for (size_t g = 0; g < kQuadsPerBlock; ++g, quads += n_pad) {
      __m512i xv[B];
#pragma GCC unroll 16
      for (size_t b = 0; b < B; ++b) xv[b] = _mm512_load_si512(quads + b * kBlockTokens);
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) {
        const __m512i wv = _mm512_set1_epi32(static_cast<int>(w_quads[r][g]));
#pragma GCC unroll 16
        for (size_t b = 0; b < B; ++b) sums[b][r] = _mm512_dpbusd_epi32(sums[b][r], wv, xv[b]);
      }
    }
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) {
      uint16_t d_bits;
      std::memcpy(&d_bits, w + r * a.w_row_stride, 2);
      const __m512 d_w = _mm512_set1_ps(_cvtsh_ss(d_bits));
#pragma GCC unroll 16
      for (size_t b = 0; b < B; ++b) {
        // Exact in f32: |sum| <= 32 * 127 * 128 < 2^24.
        const __m512 dot = _mm512_cvtepi32_ps(sums[b][r]);
        const __m512 d_x = _mm512_load_ps(x.scales.data.get() + column + b * kBlockTokens);
        acc[b][r] = _mm512_fmadd_ps(_mm512_mul_ps(dot, d_x), d_w, acc[b][r]);
      }
    }
  }
  store_tile<R, B>(a, acc);
}

using DotTile = void (*)(const TileArgs&);

template <typename Format, size_t R, size_t... B>
constexpr std::array<DotTile, sizeof...(B)> dot_tiles_of_height(std::index_sequence<B...>) {
  return {&dot_tile<Format, R, B + 1>...};
}

// dot_tile<Format, R, B> indexed by [R - 1][B - 1]: leftover rows and the last token tile's blocks are only
// known at run time.
template <typename Format, size_t... R>
constexpr auto dot_tile_table(std::index_sequence<R...>) {
  return std::array{dot_tiles_of_height<Format, R + 1>(std::make_index_sequence<kTileBlocks>())...};
}

using DotTileTable = decltype(dot_tile_table<Q8_0Codes>(std::make_index_sequence<kTileRows>()));

template <typename Format>
constexpr DotTileTable kDotTiles = dot_tile_table<Format>(std::make_index_sequence<kTileRows>());

// Output rows [row_begin, row_end) for all tokens, cut into kTileRows stripes (see RowStripes): with
// adjacent rows side by side, weights streamed from DRAM arrived at ~8 GB/s and made this kernel slower
// than the fma path below 16 tokens. Token tiles run outermost, so every token tile after the first finds
// the task's weights in L2.
void matmul_rows(const DotTileTable& tiles, const std::byte* w, size_t row_bytes, const PackedActivations& x,
                 size_t n_tokens, float* y, size_t rows, size_t row_begin, size_t row_end) {
  const RowStripes stripes(row_begin, row_end, kTileRows);
  for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    TileArgs a{.w_row_stride = stripes.stripe * row_bytes,
               .x = &x,
               .t0 = t0,
               .n_tokens = std::min(kTileTokens, n_tokens - t0),
               .y_token_stride = rows,
               .y_row_stride = stripes.stripe};
    const size_t blocks = (a.n_tokens + kBlockTokens - 1) / kBlockTokens;
    for (size_t row = row_begin; row < row_begin + stripes.stripe; ++row) {
      a.w = w + row * row_bytes;
      a.y = y + t0 * rows + row;
      tiles[kTileRows - 1][blocks - 1](a);
    }
    if (const size_t leftover = row_end - stripes.leftover_begin; leftover > 0) {
      a.w = w + stripes.leftover_begin * row_bytes;
      a.w_row_stride = row_bytes;
      a.y = y + t0 * rows + stripes.leftover_begin;
      a.y_row_stride = 1;
      tiles[leftover - 1][blocks - 1](a);
    }
  }
}

}  // namespace

bool cpu_has_avx512vnni() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                          cpu_has_f16c();
  return has;
}

void matmul_vnni(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  const DotTileTable& tiles = w.dtype == DType::Q4_0 ? kDotTiles<Q4_0Codes> : kDotTiles<Q8_0Codes>;
  const size_t k = static_cast<size_t>(w.cols());
  const int64_t rows = w.rows();
  // Reused across calls: the engine calls matmul ~100 times per forward pass with a handful of shapes.
  thread_local PackedActivations scratch;
  // A lambda naming the thread_local would see each worker's own (empty) copy; bind the caller's.
  PackedActivations& packed = scratch;
  pack_activations(pool, x, static_cast<size_t>(n_tokens), k, packed);
  const bool reused = static_cast<size_t>(n_tokens) > kTileTokens;
  const int64_t chunk = rows_per_task(rows, w.row_bytes(), pool.size(), kTileRows, reused);
  pool.run((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    matmul_rows(tiles, w.data, w.row_bytes(), packed, static_cast<size_t>(n_tokens), y,
                static_cast<size_t>(rows), static_cast<size_t>(begin),
                static_cast<size_t>(std::min(rows, begin + chunk)));
  });
}

}  // namespace ge::kernels::detail

#else  // not x86-64: no AVX512-VNNI, matmul() never calls the kernel

namespace ge::kernels::detail {
bool cpu_has_avx512vnni() {
  return false;
}
void matmul_vnni(ThreadPool&, const Tensor&, const float*, int64_t, float*) {}
}  // namespace ge::kernels::detail

#endif
