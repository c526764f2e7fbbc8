// AVX2 integer kernels for quantized weights (MLX affine 4 and 8-bit, nvfp4, mxfp4; every ggml block type)
// with activations quantized to 8-bit blocks (Precision::kReducedActivations), as llama.cpp computes its
// quantized products, over weights repacked once at load (as ik_llama.cpp's -rtr does).
//
// Repacking interleaves rows in blocks of 8: a 32-byte load holds, in each of its eight 4-byte lanes, codes
// of one row, so that a broadcast of four activation codes and one vpmaddubsw multiply 8 rows at once and
// the sums land in one lane per row: no horizontal sums, and the per-unit conversion to f32 and scaling
// are paid once for 8 rows. Scales and offsets become f32 vectors of the 8 rows' values per unit (group).
// For 4-bit codes each lane's 4 bytes hold elements 8k..8k+3 in their low nibbles and 8k+4..8k+7 in their
// high nibbles; 8-bit codes are stored 4 a lane.
//
// Every format becomes value = scale * (code - zero point) + offset with one scale per unit (16 or 32
// values, or an MLX 4-bit group), a zero point for the whole matrix and one offset per group: ggml's zero
// points (Q4_0's 8, Q5_0's 16, Q3_K's 4, Q6_K's 32) come out of the integer sums with the unit's sum of
// activation codes, so the codes stay unsigned and vpmaddubsw takes them as they are; minimums (Q4_1,
// Q5_1, Q2_K, Q4_K, Q5_K) and MLX's biases are offsets, which multiply the sum of the rounded activations.
// Scales are kept as fp16 where the format stores fp16 (ggml's d: the repacked matrix is then no larger
// than the file), else f32. Codes
// that are not plain integers go through a 16-entry table (E2M1 made unsigned as twice their value plus
// 12, see NibbleKernel; IQ4's signed values) and 8-bit signed codes through |w| * sign(x, w).
//
// Activations are cut into units of the weight's unit, each with one scale (d = max|x| / 127, codes
// round(x / d)).
//
// Only the functions marked GE_AVX2 use AVX2; the rest of the file is baseline x86-64.
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/ggml_blocks.h"
#include "kernels/matmul.h"
#include "kernels/mlx_quant.h"

#define GE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace ge::kernels {

namespace {

constexpr int64_t kRows = 8;           // rows interleaved in a block
constexpr int64_t kMaxTokens = 4;      // tokens a tile multiplies with each unpacked weight vector
constexpr int64_t kDecodeStreams = 2;  // row blocks a decode step reads side by side (see block_tile)
constexpr int64_t kPrefetchUnits = 8;  // how far ahead of a block's codes to fetch (1b 8-bit decode: +20%)

using Codes = RepackedMatrix::Codes;

// One row's codes (one byte each, in order), its scale per unit and offset per group.
struct RowCodes {
  std::vector<uint8_t> codes;
  std::vector<float> scales, offsets;
};

}  // namespace

template <class FillRow>
RepackedMatrix RepackedMatrix::build(const Layout& layout, int64_t rows, int64_t cols, FillRow&& fill_row) {
  RepackedMatrix r;
  r.codes_kind_ = layout.kind;
  r.rows_ = rows;
  r.cols_ = cols;
  r.unit_ = layout.unit;
  r.group_ = layout.group;
  r.zero_point_ = layout.zero_point;
  const int64_t blocks = (rows + kRows - 1) / kRows, units = cols / layout.unit, groups = cols / layout.group;
  const bool nibbles = r.bits() == 4;
  const int64_t elems_per_step = nibbles ? 8 : 4;  // per lane per 32-byte vector
  r.codes_.assign(static_cast<size_t>(blocks * cols * kRows * r.bits() / 8), std::byte{0});
  const auto scale_count = static_cast<size_t>(blocks * units * kRows);
  if (layout.half_scales)
    r.scales16_.assign(scale_count, 0);
  else
    r.scales_.assign(scale_count, 0.0f);
  if (layout.offsets) r.offsets_.assign(static_cast<size_t>(blocks * groups * kRows), 0.0f);
  // Rows are decoded on every core (1b Q4_0: 2.3 s of load on one core): each thread takes whole 8-row
  // blocks, so no two write the same bytes.
  const auto fill_blocks = [&](int64_t first_block, int64_t end_block) {
    RowCodes row_codes{std::vector<uint8_t>(static_cast<size_t>(cols)),
                       std::vector<float>(static_cast<size_t>(units)),
                       std::vector<float>(static_cast<size_t>(groups))};
    for (int64_t row = first_block * kRows; row < std::min(rows, end_block * kRows); ++row) {
      fill_row(row, row_codes);
      const uint8_t* c = row_codes.codes.data();
      const int64_t block = row / kRows, lane = row % kRows;
      // Codes: step k of the row's block holds elements [k * elems_per_step, +elems_per_step) of each row.
      std::byte* dst = r.codes_.data() + block * cols * kRows * r.bits() / 8;
      for (int64_t k = 0; k < cols / elems_per_step; ++k) {
        auto* lane_bytes = reinterpret_cast<uint8_t*>(dst + (k * kRows + lane) * 4);
        for (int64_t i = 0; i < 4; ++i)
          lane_bytes[i] = nibbles ? static_cast<uint8_t>(c[k * 8 + i] | c[k * 8 + 4 + i] << 4) : c[k * 4 + i];
      }
      for (int64_t u = 0; u < units; ++u) {
        const auto at = static_cast<size_t>((block * units + u) * kRows + lane);
        if (layout.half_scales)
          r.scales16_[at] = f32_to_f16(row_codes.scales[u]);  // exact: these formats store fp16 scales
        else
          r.scales_[at] = row_codes.scales[u];
      }
      if (layout.offsets)
        for (int64_t g = 0; g < groups; ++g)
          r.offsets_[static_cast<size_t>((block * groups + g) * kRows + lane)] = row_codes.offsets[g];
    }
  };
  const int64_t threads =
      std::max<int64_t>(1, std::min<int64_t>(std::thread::hardware_concurrency(), blocks));
  const int64_t per_thread = (blocks + threads - 1) / threads;
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t)
    workers.emplace_back(fill_blocks, t * per_thread, std::min(blocks, (t + 1) * per_thread));
  fill_blocks(0, std::min(blocks, per_thread));
  for (std::thread& w : workers) w.join();
  return r;
}

std::optional<RepackedMatrix> RepackedMatrix::repack(const QuantizedMatrix& m) {
  const QuantParams& p = m.params;
  const bool supported = (p.mode == QuantMode::kAffine && (p.bits == 4 || p.bits == 8)) ||
                         p.mode == QuantMode::kNvfp4 || p.mode == QuantMode::kMxfp4;
  if (!supported || m.cols % 32 != 0 || !detail::cpu_has_avx2()) return std::nullopt;
  const Codes kind = p.bits == 8                    ? Codes::kSignedBytes
                     : p.mode == QuantMode::kAffine ? Codes::kNibbles
                                                    : Codes::kFp4Nibbles;
  // E2M1 codes become twice their value plus 12 (see NibbleKernel): a zero point of 12.
  const int32_t zero_point = kind == Codes::kFp4Nibbles ? 12 : 0;
  // Activation values per scale: a 4-bit group, or 32 for 8-bit codes (activation blocks of 64 measured
  // 0.28 against 0.18 on gemma3-tiny's logits: blocks of 32 keep them as close as llama.cpp's Q8_0).
  const int64_t unit = p.bits == 4 ? p.group_size : 32;
  const float unit_value = p.mode == QuantMode::kAffine ? 1.0f : 0.5f;  // E2M1 codes count half units
  const float shift = p.bits == 8 ? 128.0f : 0.0f;  // 8-bit codes are stored as the signed q - 128
  const int64_t groups = m.groups();
  const Layout layout{kind, unit, p.group_size, zero_point, false, m.biases != nullptr};
  return build(layout, m.rows, m.cols, [&](int64_t row, RowCodes& out) {
    thread_local std::vector<float> scales;
    scales.resize(static_cast<size_t>(groups));
    const std::byte* src = m.codes + row * m.code_row_bytes();
    const std::byte* row_scales = m.scales + row * m.scale_row_bytes();
    for (int64_t g = 0; g < groups; ++g) {
      scales[g] = m.scale_dtype == DType::U8 ? scale_table(p.mode)[static_cast<uint8_t>(row_scales[g])]
                                             : load_float(row_scales, m.scale_dtype, g);
      if (m.biases)
        out.offsets[g] =
            load_float(m.biases + row * m.scale_row_bytes(), m.scale_dtype, g) + shift * scales[g];
    }
    for (int64_t i = 0; i < m.cols; ++i) {
      const uint32_t code = unpack_code(src, i, p.bits);
      out.codes[i] = static_cast<uint8_t>(p.bits == 8 ? code ^ 0x80 : code);
    }
    for (int64_t u = 0; u < m.cols / unit; ++u) out.scales[u] = scales[u * unit / p.group_size] * unit_value;
  });
}

namespace {

// How a ggml block type repacks (besides unit == group): a shift that makes its signed codes unsigned
// (Q6_K's q - 32 back to q), its zero point (Q4_0's 8, Q5_0's 16, Q3_K's 4, Q6_K's 32: taken out in
// integers), fp16 scales where the format stores them so (d itself; a K type's scale d * sc is not an fp16),
// and f32 offsets for its minimums.
struct BlockRepack {
  Codes kind;
  int64_t unit;
  int code_shift;
  int32_t zero_point;
  bool half_scales, offsets;
};

std::optional<BlockRepack> block_repack(DType t) {
  switch (t) {
    case DType::Q4_0:
      return BlockRepack{Codes::kNibbles, 32, 0, 8, true, false};
    case DType::Q4_1:
      return BlockRepack{Codes::kNibbles, 32, 0, 0, true, true};
    case DType::Q4_K:
      return BlockRepack{Codes::kNibbles, 32, 0, 0, false, true};
    case DType::Q5_0:
      return BlockRepack{Codes::kSmallBytes, 32, 0, 16, true, false};
    case DType::Q5_1:
      return BlockRepack{Codes::kSmallBytes, 32, 0, 0, true, true};
    case DType::Q5_K:
      return BlockRepack{Codes::kSmallBytes, 32, 0, 0, false, true};
    case DType::Q2_K:
      return BlockRepack{Codes::kSmallBytes, 16, 0, 0, false, true};
    case DType::Q3_K:
      return BlockRepack{Codes::kSmallBytes, 16, 0, 4, false, false};
    case DType::Q6_K:
      return BlockRepack{Codes::kSmallBytes, 16, 32, 32, false, false};
    case DType::Q8_0:
      return BlockRepack{Codes::kSignedBytes, 32, 0, 0, true, false};
    case DType::IQ4_NL:
      return BlockRepack{Codes::kIq4Nibbles, 32, 0, 0, true, false};
    case DType::IQ4_XS:
      return BlockRepack{Codes::kIq4Nibbles, 32, 0, 0, false, false};
    default:
      return std::nullopt;
  }
}

}  // namespace

std::optional<RepackedMatrix> RepackedMatrix::repack(const Tensor& w) {
  const auto f = block_repack(w.dtype);
  if (!f || w.shape.size() != 2 || !detail::cpu_has_avx2()) return std::nullopt;
  const DTypeInfo& info = dtype_info(w.dtype);
  if (w.cols() % info.block_elems != 0) return std::nullopt;
  const int64_t units_per_block = info.block_elems / f->unit;
  const Layout layout{f->kind, f->unit, f->unit, f->zero_point, f->half_scales, f->offsets};
  return build(layout, w.rows(), w.cols(), [&](int64_t row, RowCodes& out) {
    BlockCodes b;
    for (int64_t blk = 0; blk < w.cols() / info.block_elems; ++blk) {
      decode_block(w.dtype, w.row(row) + blk * info.block_bytes, b);
      const int64_t first = blk * info.block_elems;
      for (int i = 0; i < b.values; ++i)
        out.codes[first + i] =
            f->kind == Codes::kIq4Nibbles ? b.index[i] : static_cast<uint8_t>(b.code[i] + f->code_shift);
      for (int64_t u = 0; u < units_per_block; ++u) {
        out.scales[blk * units_per_block + u] = b.scale[u];
        if (f->offsets) out.offsets[blk * units_per_block + u] = b.offset[u];
      }
    }
  });
}

namespace {

// The activations of up to n tokens in units (see the file comment): for token t and unit u, `unit` codes
// at codes[(t * units + u) * unit] in natural order, their sum at code_sums[t * units + u] and their scale
// at scales[t * units + u]; the sum of the rounded activations (scale * codes) over each weight group at
// group_sums[t * groups + g].
struct Activations {
  std::vector<int8_t> codes;
  std::vector<int32_t> code_sums;  // per token and unit
  std::vector<float> scales, group_sums;
  int64_t unit = 0, units = 0, groups = 0;
};

GE_AVX2 inline float horizontal_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// One token's k values (k, unit and group multiples of 16; unit and group of 32 values or more, or 16):
// codes rounded half to even (vcvtps2dq, as lrintf), packed to bytes in order.
GE_AVX2 void quantize_token(const float* x, int64_t k, int64_t unit, int64_t group, int8_t* codes,
                            int32_t* code_sums, float* scales, float* group_sums) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t u = 0; u < k / unit; ++u) {
    const float* xu = x + u * unit;
    __m256 amax = _mm256_setzero_ps();
    for (int64_t i = 0; i < unit; i += 8)
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xu + i)));
    const float d = horizontal_max(amax) / 127, id = d != 0 ? 1 / d : 0;
    scales[u] = d;
    const __m256 inv = _mm256_set1_ps(id);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t i = 0; i < unit; i += 16) {
      const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xu + i), inv));
      const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xu + i + 8), inv));
      sum = _mm256_add_epi32(sum, _mm256_add_epi32(a, b));
      // packs work within 128-bit lanes: [a0-3 b0-3 | a4-7 b4-7] as words, then bytes twice over.
      const __m256i words = _mm256_packs_epi32(a, b);
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words), order);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + u * unit + i), _mm256_castsi256_si128(bytes));
    }
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
    code_sums[u] = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  }
  // The offsets multiply the sum of the rounded activations, not of x: then the rounding error of the whole
  // product is sum((scale * code + offset) * e) over the activations' errors e, as in llama.cpp, rather
  // than sum(scale * code * e), which for zero points (Q4_0's 8) weighs e by codes twice as large (gemma3-256
  // Q4_0: 0.25 from the dequantized model with exact sums, 0.10 with these).
  const int64_t units_per_group = group / unit;
  for (int64_t g = 0; g < k / group; ++g) {
    float sum = 0;
    for (int64_t u = g * units_per_group; u < (g + 1) * units_per_group; ++u)
      sum += scales[u] * static_cast<float>(code_sums[u]);
    group_sums[g] = sum;
  }
}

void quantize_activations(ThreadPool& pool, const float* x, int64_t n_tokens, int64_t k, int64_t unit,
                          int64_t group, Activations& a) {
  a.unit = unit;
  a.units = k / unit;
  a.groups = k / group;
  a.codes.resize(static_cast<size_t>(n_tokens * k));
  a.code_sums.resize(static_cast<size_t>(n_tokens * a.units));
  a.scales.resize(static_cast<size_t>(n_tokens * a.units));
  a.group_sums.resize(static_cast<size_t>(n_tokens * a.groups));
  pool.run(n_tokens, [&](int64_t t) {
    quantize_token(x + t * k, k, unit, group, a.codes.data() + t * k, a.code_sums.data() + t * a.units,
                   a.scales.data() + t * a.units, a.group_sums.data() + t * a.groups);
  });
}

GE_AVX2 inline __m256i broadcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

template <bool kSigned>
GE_AVX2 inline __m256i pair_products(__m256i w, __m256i x) {
  if constexpr (kSigned)
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  else
    return _mm256_maddubs_epi16(w, x);
}

GE_AVX2 inline __m256i widen_sum(__m256i pairs) {
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Per format: the int32 sums (one lane per row of the block) of one activation unit of T tokens times the
// block's codes of that unit, added to isum[t].
//
// 4-bit: each k step is one 32-byte vector, split into its low and high nibbles (elements 8k..8k+3 and
// 8k+4..8k+7 of each row). Plain codes are unsigned bytes for vpmaddubsw as they are; E2M1 codes go through
// a 16-entry table to twice their value plus 12 (0..24; a zero point of 12, taken back with the unit's sum
// of activation codes, which spares the |w| * sign(x, w) pair). Pair sums stay in int16
// for kWidenSteps steps: at most 2 * 2 * 15 * 127 per step and lane (4 steps: 30480 < 32767), or
// 2 * 2 * 24 * 127 for E2M1 (2 steps: 24384). IQ4's table values are signed (-127..113): they take the
// sign pair, and each product widens on its own (a pair sum reaches 2 * 127 * 127).
template <Codes kKind>
struct NibbleKernel {
  static constexpr bool kSigned = kKind == Codes::kIq4Nibbles;
  static constexpr int64_t kWidenSteps = kKind == Codes::kNibbles ? 4 : kKind == Codes::kFp4Nibbles ? 2 : 1;
  GE_AVX2 static __m256i values(__m256i nibbles) {
    if constexpr (kKind == Codes::kFp4Nibbles) {
      const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13,
                                           14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
      return _mm256_shuffle_epi8(lut, nibbles);
    } else if constexpr (kSigned) {
      const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values));
      return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), nibbles);
    } else {
      return nibbles;
    }
  }
  // kSteps steps of 8 values, all unrolled, so that the per-token sums stay in registers.
  template <int64_t T, int64_t kSteps>
  GE_AVX2 static void chunk(const std::byte* codes, const int8_t* const* x, __m256i (&isum)[T]) {
    const __m256i low = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int64_t k0 = 0; k0 < kSteps; k0 += kWidenSteps) {
      __m256i pairs[T];
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t) pairs[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int64_t k = k0; k < k0 + kWidenSteps; ++k) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + k * 32));
        const __m256i lo = values(_mm256_and_si256(c, low));
        const __m256i hi = values(_mm256_and_si256(_mm256_srli_epi16(c, 4), low));
#pragma GCC unroll 4
        for (int64_t t = 0; t < T; ++t) {
          if constexpr (kSigned) {
            isum[t] = _mm256_add_epi32(isum[t], widen_sum(pair_products<true>(lo, broadcast4(x[t] + k * 8))));
            isum[t] =
                _mm256_add_epi32(isum[t], widen_sum(pair_products<true>(hi, broadcast4(x[t] + k * 8 + 4))));
          } else {
            pairs[t] = _mm256_add_epi16(pairs[t], pair_products<false>(lo, broadcast4(x[t] + k * 8)));
            pairs[t] = _mm256_add_epi16(pairs[t], pair_products<false>(hi, broadcast4(x[t] + k * 8 + 4)));
          }
        }
      }
      if constexpr (!kSigned)
#pragma GCC unroll 4
        for (int64_t t = 0; t < T; ++t) isum[t] = _mm256_add_epi32(isum[t], widen_sum(pairs[t]));
    }
  }
  // A unit of 16 values (nvfp4) or a multiple of 32.
  template <int64_t T>
  GE_AVX2 static void unit(const std::byte* codes, const int8_t* const* x, int64_t unit, __m256i (&isum)[T]) {
    if (unit == 16) return chunk<T, 2>(codes, x, isum);
    for (int64_t c = 0; c < unit / 32; ++c) {
      const int8_t* xc[T];
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t) xc[t] = x[t] + c * 32;
      chunk<T, 4>(codes + c * 32 * kRows / 2, xc, isum);
    }
  }
};

// 8-bit: each k step is 4 codes a row. Signed codes take the sign pair and a pair sum reaches 2 * 128 *
// 127, so each step widens to int32; unsigned codes below 64 go to vpmaddubsw as they are and two steps
// share a widening (2 * 2 * 63 * 127 = 32004).
template <bool kSigned>
struct ByteKernel {
  static constexpr int64_t kWidenSteps = kSigned ? 1 : 2;
  // 16 values (4 steps), unrolled.
  template <int64_t T>
  GE_AVX2 static void chunk(const std::byte* codes, const int8_t* const* x, __m256i (&isum)[T]) {
#pragma GCC unroll 4
    for (int64_t k0 = 0; k0 < 4; k0 += kWidenSteps) {
      __m256i pairs[T];
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t) pairs[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int64_t k = k0; k < k0 + kWidenSteps; ++k) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + k * 32));
#pragma GCC unroll 4
        for (int64_t t = 0; t < T; ++t)
          pairs[t] = _mm256_add_epi16(pairs[t], pair_products<kSigned>(w, broadcast4(x[t] + k * 4)));
      }
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t) isum[t] = _mm256_add_epi32(isum[t], widen_sum(pairs[t]));
    }
  }
  template <int64_t T>
  GE_AVX2 static void unit(const std::byte* codes, const int8_t* const* x, int64_t unit, __m256i (&isum)[T]) {
    for (int64_t c = 0; c < unit / 16; ++c) {
      const int8_t* xc[T];
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t) xc[t] = x[t] + c * 16;
      chunk<T>(codes + c * 16 * kRows, xc, isum);
    }
  }
};

// Row blocks `blocks` times tokens [t0, t0 + T): y[t * rows + row] for the blocks' rows. Each block's codes
// are one sequential stream; a decode step (T = 1) walks S = 2 blocks far apart in lockstep, because one
// core reading one stream gets about half the read bandwidth it gets from two (Zen 3-5: ~35 against ~65 GB/s
// for two cores).
template <class Kernel, bool kHalfScales, int64_t T, int64_t S>
GE_AVX2 void block_tile(const RepackedMatrix& m, const Activations& a, const int64_t (&blocks)[S], int64_t t0,
                        float* y) {
  const int64_t unit = a.unit, units = a.units, groups = a.groups;
  const size_t unit_bytes = static_cast<size_t>(unit * kRows * m.bits() / 8);
  const int32_t zero_point = m.zero_point();
  const std::byte* codes[S];
  const float* scales[S];
  const uint16_t* scales16[S];
#pragma GCC unroll 4
  for (int64_t s = 0; s < S; ++s) {
    codes[s] = m.codes() + blocks[s] * m.cols() * kRows * m.bits() / 8;
    scales[s] = kHalfScales ? nullptr : m.scales() + blocks[s] * units * kRows;
    scales16[s] = kHalfScales ? m.half_scale_bits() + blocks[s] * units * kRows : nullptr;
  }
  const int8_t* x[T];
  __m256 acc[S][T];
#pragma GCC unroll 4
  for (int64_t t = 0; t < T; ++t) {
    x[t] = a.codes.data() + (t0 + t) * units * unit;
#pragma GCC unroll 4
    for (int64_t s = 0; s < S; ++s) acc[s][t] = _mm256_setzero_ps();
  }
  for (int64_t u = 0; u < units; ++u) {
    const int8_t* xu[T];
#pragma GCC unroll 4
    for (int64_t t = 0; t < T; ++t) xu[t] = x[t] + u * unit;
#pragma GCC unroll 4
    for (int64_t s = 0; s < S; ++s) {
      __m256i isum[T];
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
      // Fetching ahead of the stream keeps more lines in flight than the hardware prefetcher alone does.
      for (size_t ahead = 0; ahead < unit_bytes; ahead += 64)
        _mm_prefetch(reinterpret_cast<const char*>(codes[s] + (u + kPrefetchUnits) * unit_bytes + ahead),
                     _MM_HINT_T0);
      Kernel::template unit<T>(codes[s] + u * unit_bytes, xu, unit, isum);
      if (zero_point != 0)
#pragma GCC unroll 4
        for (int64_t t = 0; t < T; ++t)
          isum[t] =
              _mm256_sub_epi32(isum[t], _mm256_set1_epi32(zero_point * a.code_sums[(t0 + t) * units + u]));
      const __m256 sc = kHalfScales ? _mm256_cvtph_ps(_mm_loadu_si128(
                                          reinterpret_cast<const __m128i*>(scales16[s] + u * kRows)))
                                    : _mm256_loadu_ps(scales[s] + u * kRows);
#pragma GCC unroll 4
      for (int64_t t = 0; t < T; ++t)
        acc[s][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]),
                                    _mm256_mul_ps(sc, _mm256_set1_ps(a.scales[(t0 + t) * units + u])), acc[s][t]);
    }
  }
#pragma GCC unroll 4
  for (int64_t s = 0; s < S; ++s) {
    if (m.offsets()) {
      const float* offsets = m.offsets() + blocks[s] * groups * kRows;
      for (int64_t g = 0; g < groups; ++g) {
        const __m256 o = _mm256_loadu_ps(offsets + g * kRows);
#pragma GCC unroll 4
        for (int64_t t = 0; t < T; ++t)
          acc[s][t] = _mm256_fmadd_ps(o, _mm256_set1_ps(a.group_sums[(t0 + t) * groups + g]), acc[s][t]);
      }
    }
    const int64_t valid = std::min(kRows, m.rows() - blocks[s] * kRows);
#pragma GCC unroll 4
    for (int64_t t = 0; t < T; ++t) {
      alignas(32) float out[kRows];
      _mm256_store_ps(out, acc[s][t]);
      std::copy(out, out + valid, y + (t0 + t) * m.rows() + blocks[s] * kRows);
    }
  }
}

template <class Kernel, bool kHalfScales, int64_t... T>
GE_AVX2 void run_tiles(const RepackedMatrix& m, const Activations& a, int64_t block, int64_t n_tokens,
                       float* y, std::integer_sequence<int64_t, T...>) {
  using Tile = void (*)(const RepackedMatrix&, const Activations&, const int64_t (&)[1], int64_t, float*);
  static constexpr Tile kTiles[] = {&block_tile<Kernel, kHalfScales, T + 1, 1>...};
  const int64_t blocks[1] = {block};
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens)
    kTiles[std::min(kMaxTokens, n_tokens - t0) - 1](m, a, blocks, t0, y);
}

// One token times blocks [begin, end): kDecodeStreams stripes of the range side by side.
template <class Kernel, bool kHalfScales>
GE_AVX2 void run_decode(const RepackedMatrix& m, const Activations& a, int64_t begin, int64_t end, float* y) {
  constexpr int64_t S = kDecodeStreams;
  const int64_t stripe = (end - begin) / S;
  for (int64_t i = 0; i < stripe; ++i) {
    int64_t blocks[S];
    for (int64_t s = 0; s < S; ++s) blocks[s] = begin + s * stripe + i;
    block_tile<Kernel, kHalfScales, 1, S>(m, a, blocks, 0, y);
  }
  for (int64_t b = begin + S * stripe; b < end; ++b) {
    const int64_t last[1] = {b};
    block_tile<Kernel, kHalfScales, 1, 1>(m, a, last, 0, y);
  }
}

template <class Kernel>
void matmul_kernel(ThreadPool& pool, const RepackedMatrix& m, const float* x, int64_t n_tokens, float* y) {
  // Reused across calls; named through a reference, since inside the lambda below the thread_local itself
  // would be each worker's own (empty) copy.
  thread_local Activations reused;
  Activations& a = reused;
  quantize_activations(pool, x, n_tokens, m.cols(), m.unit(), m.group(), a);
  const int64_t blocks = (m.rows() + kRows - 1) / kRows;
  const size_t block_bytes = static_cast<size_t>(m.cols() * kRows * m.bits() / 8);
  const int64_t chunk = detail::rows_per_task(blocks, block_bytes, pool.size(), 1, n_tokens > kMaxTokens);
  pool.run((blocks + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk, end = std::min(blocks, (task + 1) * chunk);
    if (n_tokens == 1) {
      if (m.half_scales())
        run_decode<Kernel, true>(m, a, begin, end, y);
      else
        run_decode<Kernel, false>(m, a, begin, end, y);
      return;
    }
    for (int64_t b = begin; b < end; ++b) {
      if (m.half_scales())
        run_tiles<Kernel, true>(m, a, b, n_tokens, y, std::make_integer_sequence<int64_t, kMaxTokens>());
      else
        run_tiles<Kernel, false>(m, a, b, n_tokens, y, std::make_integer_sequence<int64_t, kMaxTokens>());
    }
  });
}

}  // namespace

void matmul(ThreadPool& pool, const RepackedMatrix& w, const float* x, int64_t n_tokens, float* y) {
  if (n_tokens <= 0 || w.rows() == 0) return;
  switch (w.codes_kind()) {
    case Codes::kNibbles:
      return matmul_kernel<NibbleKernel<Codes::kNibbles>>(pool, w, x, n_tokens, y);
    case Codes::kFp4Nibbles:
      return matmul_kernel<NibbleKernel<Codes::kFp4Nibbles>>(pool, w, x, n_tokens, y);
    case Codes::kIq4Nibbles:
      return matmul_kernel<NibbleKernel<Codes::kIq4Nibbles>>(pool, w, x, n_tokens, y);
    case Codes::kSignedBytes:
      return matmul_kernel<ByteKernel<true>>(pool, w, x, n_tokens, y);
    case Codes::kSmallBytes:
      return matmul_kernel<ByteKernel<false>>(pool, w, x, n_tokens, y);
  }
}

namespace detail {
bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
}  // namespace detail

}  // namespace ge::kernels

#else  // !__x86_64__

#include "kernels/matmul.h"

namespace ge::kernels {
std::optional<RepackedMatrix> RepackedMatrix::repack(const QuantizedMatrix&) {
  return std::nullopt;
}
std::optional<RepackedMatrix> RepackedMatrix::repack(const Tensor&) {
  return std::nullopt;
}
void matmul(ThreadPool&, const RepackedMatrix&, const float*, int64_t, float*) {}
namespace detail {
bool cpu_has_avx2() {
  return false;
}
}  // namespace detail
}  // namespace ge::kernels

#endif
