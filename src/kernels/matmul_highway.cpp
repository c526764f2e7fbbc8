// f32-FMA matmul kernels for every Highway target. A tile of weight rows x tokens keeps one vector
// accumulator per (row, token) pair, so each widened (or dequantized) weight vector is reused across the
// tile's tokens and each activation vector across its rows; the horizontal sums happen once per tile.
// The formats: plain floats, ggml's blocks (Q8_0/Q4_0 decoded in registers, the other types per block on
// the stack), and MLX's packed codes with per-group scales.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_highway.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/matmul_internal.h"
#include "kernels/ggml_blocks.h"
#include "kernels/mlx_quant.h"
#include "kernels/quantize.h"
#include "tensor/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kLanes = hn::MaxLanes(DF());
// The K loop of the plain formats consumes two vectors of weights per row per step: one u32 load of
// 2*kLanes bf16 weights widens into two f32 vectors without any shuffle (see Bf16Format).
constexpr size_t kStep = 2 * kLanes;

// AVX-512 has 32 vector registers: a 4x6 tile (24 accumulators) leaves room for the weights and one
// activation vector. The 16-register targets get 4x2 (8 accumulators).
constexpr size_t kTileRows = 4;
constexpr size_t kTileTokens = kLanes >= 16 ? 6 : 2;

// Where the weights of one row are: its values or codes, and for the MLX formats its groups' scales (and
// biases), which MLX stores apart from the codes.
struct RowPtrs {
  const std::byte* w;
  const std::byte* scales;
  const std::byte* biases;
};

// What every row of an MLX matrix shares: how its scales are stored, and how many steps make a group.
struct GroupLayout {
  DType scale_dtype;        // affine: F32/F16/BF16; fp modes: U8 codes decoded through scale_table
  const float* scale_table; // fp modes: the f32 value of each of the 256 scale codes
  unsigned group_shift;     // step s lies in group s >> group_shift
};

// A weight format tells DotTile how a row is cut into steps: each step holds kStepElems weights in
// kStepBytes, is opened once per row (Open, e.g. to read a block's scale) and widened into kStepElems /
// kLanes f32 vectors; vector v multiplies x[step start + v * kLanes, + kLanes). Rows of the plain formats
// may end in a partial step, done one weight at a time (ToFloat); rows of the block formats (kBlocks) are
// whole blocks, each with a scale (and, kHasBias, a bias).

template <class T>
struct PlainFormat {
  static constexpr size_t kStepElems = kStep, kStepBytes = kStep * sizeof(T);
  static constexpr bool kBlocks = false, kHasBias = false;
  using Step = const T*;
  static HWY_INLINE Step Open(DF, const RowPtrs& row, const GroupLayout&, size_t s) {
    return reinterpret_cast<const T*>(row.w + s * kStepBytes);
  }
};

struct F32Format : PlainFormat<float> {
  static constexpr bool kPermutedX = false;
  static HWY_INLINE VF Widen(DF d, Step p, size_t v) { return hn::LoadU(d, p + v * kLanes); }
  static HWY_INLINE float ToFloat(const std::byte* p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
};

struct F16Format : PlainFormat<hwy::float16_t> {
  static constexpr bool kPermutedX = false;
  static HWY_INLINE VF Widen(DF d, Step p, size_t v) {
    return hn::PromoteTo(d, hn::LoadU(hn::Rebind<hwy::float16_t, DF>(), p + v * kLanes));
  }
  static HWY_INLINE float ToFloat(const std::byte* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return f16_to_f32(bits);
  }
};

// A u32 lane holds the bf16 pair (2j, 2j+1): shifting it left by 16 gives element 2j as f32 and masking
// the low half gives element 2j+1. That widens 2*kLanes weights with two cheap ALU ops instead of two
// cross-lane shuffles, at the price of reading x in the same even/odd order (PermuteForBf16).
struct Bf16Format : PlainFormat<hwy::bfloat16_t> {
  static constexpr bool kPermutedX = true;
  static HWY_INLINE VF Widen(DF d, Step p, size_t v) {
    const hn::RebindToUnsigned<DF> du;
    const auto pairs = hn::LoadU(du, reinterpret_cast<const uint32_t*>(p));
    const auto widened = v == 0 ? hn::ShiftLeft<16>(pairs) : hn::And(pairs, hn::Set(du, 0xFFFF0000u));
    return hn::BitCast(d, widened);
  }
  static HWY_INLINE float ToFloat(const std::byte* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return bf16_to_f32(bits);
  }
};

// One step of the block formats is one block (see kernels/quantize.h): Codes gives q (Q8_0) or q - 8
// (Q4_0) as f32, Widen the weight d * q, which is exact in f32 (an 11-bit significand times a code of at
// most 8 bits). Either way every product with x is exact inside its FMA (see AccumulateBlockSums).
static_assert(kLanes <= static_cast<size_t>(kQuantBlock) / 2,
              "a vector must not straddle a Q4_0 nibble half");

struct QuantStep {
  const std::byte* codes;
  VF scale;
};

template <class Derived, size_t kBlockBytes>
struct BlockFormat {
  static constexpr size_t kStepElems = kQuantBlock, kStepBytes = kBlockBytes;
  static constexpr bool kBlocks = true, kPermutedX = false, kHasBias = false;
  using Step = QuantStep;
  static HWY_INLINE VF Widen(DF d, const Step& s, size_t v) {
    return hn::Mul(Derived::Codes(d, s, v), s.scale);
  }
  static HWY_INLINE Step Open(DF d, const RowPtrs& row, const GroupLayout&, size_t s) {
    const std::byte* block = row.w + s * kBlockBytes;
    const hn::CappedTag<hwy::float16_t, 1> d16;
    const auto scale = hn::PromoteTo(hn::CappedTag<float, 1>(),
                                     hn::LoadU(d16, reinterpret_cast<const hwy::float16_t*>(block)));
    return {block + 2, hn::Set(d, hn::GetLane(scale))};
  }
  static HWY_INLINE VF Scale(DF, const Step& s) { return s.scale; }
};

struct Q8_0Format : BlockFormat<Q8_0Format, kQ8_0BlockBytes> {
  static HWY_INLINE VF Codes(DF d, const Step& s, size_t v) {
    const hn::RebindToSigned<DF> di;
    const auto codes =
        hn::LoadU(hn::Rebind<int8_t, DF>(), reinterpret_cast<const int8_t*>(s.codes) + v * kLanes);
    return hn::ConvertTo(d, hn::PromoteTo(di, codes));
  }
};

// Elements [0, 16) are the low nibbles of the 16 code bytes and [16, 32) the high ones, so vector v
// reads bytes (v * kLanes) % 16 and keeps the nibble half that v * kLanes falls in. A nibble q ORed into
// the bits of 2^23 is the f32 2^23 + q, so subtracting 2^23 + 8 gives q - 8 exactly: 5-8% faster than an
// integer subtraction and a conversion on Zen 4 (there the low nibble's AND and the OR are one vpternlogd).
struct Q4_0Format : BlockFormat<Q4_0Format, kQ4_0BlockBytes> {
  static HWY_INLINE VF Codes(DF d, const Step& s, size_t v) {
    const hn::RebindToUnsigned<DF> du;
    constexpr size_t kHalf = kQuantBlock / 2;
    const size_t first = v * kLanes;
    const auto bytes = hn::PromoteTo(
        du, hn::LoadU(hn::Rebind<uint8_t, DF>(), reinterpret_cast<const uint8_t*>(s.codes) + first % kHalf));
#if HWY_TARGET <= HWY_AVX3
    // vpermps reads only the low 4 bits of each index, so one permute from a 16-entry table turns a
    // byte into its low nibble's q - 8 with no mask and no subtraction.
    HWY_ALIGN static constexpr float kCodes[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
    const auto nibbles = first < kHalf ? bytes : hn::ShiftRight<4>(bytes);
    return VF{_mm512_permutexvar_ps(nibbles.raw, hn::Load(d, kCodes).raw)};
#else
    const auto two_23 = hn::Set(du, 0x4B000000u);
    const auto bits = first < kHalf ? hn::OrAnd(two_23, bytes, hn::Set(du, 0x0Fu))
                                    : hn::Or(two_23, hn::ShiftRight<4>(bytes));
    return hn::Sub(hn::BitCast(d, bits), hn::Set(d, 0x1p23f + 8));
#endif
  }
};

// The other ggml block types (kernels/ggml_blocks.h): a step is one block, dequantized to f32 on the
// stack when a row opens it and then reused across the tile's tokens. Written for exactness, not speed:
// the default path multiplies these types with the integer kernels (RepackedMatrix).
template <DType kType, size_t kElems, size_t kBytes>
struct DecodedBlockFormat {
  static constexpr size_t kStepElems = kElems, kStepBytes = kBytes;
  static constexpr bool kBlocks = true, kPermutedX = false, kHasBias = false, kDecoded = true;
  struct Step {
    HWY_ALIGN float values[kElems];
  };
  static HWY_INLINE Step Open(DF, const RowPtrs& row, const GroupLayout&, size_t s) {
    Step step;
    dequantize_blocks(kType, row.w + s * kBytes, kElems, step.values);
    return step;
  }
  static HWY_INLINE VF Widen(DF d, const Step& s, size_t v) { return hn::Load(d, s.values + v * kLanes); }
};

template <class Format>
constexpr bool kSumsPerBlock = Format::kBlocks && !requires { Format::kDecoded; };

// MLX's packed codes (kernels/mlx_quant.h). A step is 32 codes (16 for nvfp4, whose groups are 16), so a
// step never spans two groups; vector v holds codes [v * kLanes, + kLanes) of the step in natural order.
// Each lane picks its code's word(s) out of a window of kLanes words with a lane permutation and shifts it
// into place: no gather, and 3/5/6-bit codes that straddle two words take one more permutation.
constexpr size_t kMlxStep = 32;
constexpr size_t kMlxVectors = kMlxStep / kLanes;

using DU = hn::RebindToUnsigned<DF>;
using VU = hn::Vec<DU>;

// Per vector v of a step: the first word of its window and, per lane, the word holding its code's low
// bits, the shift that brings them down, and for a code that straddles into the next word, that word
// and the left shift that places its bits above the low ones (lanes that do not straddle shift by 31:
// whatever lands there is masked off).
template <int kBits>
struct StreamLayout {
  uint32_t first_word[kMlxVectors] = {};
  bool straddles[kMlxVectors] = {};
  bool one_word[kMlxVectors] = {};  // every lane's code lies in first_word: a broadcast replaces the permute
  HWY_ALIGN uint32_t lo_word[kMlxVectors][kLanes] = {};
  HWY_ALIGN uint32_t lo_shift[kMlxVectors][kLanes] = {};
  HWY_ALIGN uint32_t hi_word[kMlxVectors][kLanes] = {};
  HWY_ALIGN uint32_t hi_shift[kMlxVectors][kLanes] = {};

  constexpr StreamLayout() {
    for (size_t v = 0; v < kMlxVectors; ++v) {
      first_word[v] = static_cast<uint32_t>(v * kLanes * kBits / 32);
      for (size_t lane = 0; lane < kLanes; ++lane) {
        const size_t bit = (v * kLanes + lane) * kBits - first_word[v] * 32;
        const uint32_t shift = bit % 32;
        const bool split = shift + kBits > 32;
        lo_word[v][lane] = static_cast<uint32_t>(bit / 32);
        lo_shift[v][lane] = shift;
        hi_word[v][lane] = split ? lo_word[v][lane] + 1 : lo_word[v][lane];
        hi_shift[v][lane] = split ? 32 - shift : 31;
        straddles[v] = straddles[v] || split;
      }
      one_word[v] = !straddles[v] && (v * kLanes + kLanes) * kBits <= (first_word[v] + 1) * 32;
    }
  }
};

template <int kBits>
HWY_INLINE VU StreamCodes(const std::byte* step, size_t v) {
  const DU du;
  const auto* bytes = reinterpret_cast<const uint8_t*>(step);
  if constexpr (kBits == 8) {
    return hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint8_t, DF>(), bytes + v * kLanes));
  } else if constexpr (kLanes < 4) {
    // Vectors of 1-2 lanes cannot hold a straddling code's two words: read codes one by one.
    HWY_ALIGN uint32_t codes[kLanes];
    for (size_t lane = 0; lane < kLanes; ++lane) codes[lane] = unpack_code(step, v * kLanes + lane, kBits);
    return hn::Load(du, codes);
  } else {
    static constexpr StreamLayout<kBits> kLayout;
    if (kLayout.one_word[v]) {
      uint32_t word;
      std::memcpy(&word, bytes + 4 * kLayout.first_word[v], 4);
      return hn::And(hn::Set(du, word) >> hn::Load(du, kLayout.lo_shift[v]), hn::Set(du, (1u << kBits) - 1));
    }
    const auto words = hn::LoadU(du, reinterpret_cast<const uint32_t*>(bytes) + kLayout.first_word[v]);
    auto codes = hn::TableLookupLanes(words, hn::SetTableIndices(du, kLayout.lo_word[v])) >>
                 hn::Load(du, kLayout.lo_shift[v]);
    if (kLayout.straddles[v])
      codes = hn::Or(codes, hn::TableLookupLanes(words, hn::SetTableIndices(du, kLayout.hi_word[v]))
                                << hn::Load(du, kLayout.hi_shift[v]));
    return hn::And(codes, hn::Set(du, (1u << kBits) - 1));
  }
}

// Bytes that StreamCodes may read past the step it decodes (a window of kLanes words).
constexpr size_t kStreamOverread = kLanes * 4;

HWY_INLINE float LoadScale(const std::byte* p, DType dtype, size_t i) {
  if (dtype == DType::BF16) {
    uint16_t h;
    std::memcpy(&h, p + i * 2, 2);
    return bf16_to_f32(h);
  }
  return load_float(p, dtype, static_cast<int64_t>(i));
}

// A step of an MLX row keeps where its group's scale (and bias) is, not their values: read at the end of
// the step (Scale, Bias), they hold no vector register while the step's codes are summed.
struct MlxStep {
  const std::byte* codes;
  const std::byte* scales;
  const std::byte* biases;
  size_t group;
  const GroupLayout* layout;
};

template <class Derived, int kBits>
struct MlxFormat {
  static constexpr size_t kStepElems = Derived::kStepCodes, kStepBytes = kStepElems * kBits / 8;
  static constexpr bool kBlocks = true, kPermutedX = false;
  using Step = MlxStep;
  static HWY_INLINE Step Open(DF, const RowPtrs& row, const GroupLayout& layout, size_t s) {
    return {row.w + s * kStepBytes, row.scales, row.biases, s >> layout.group_shift, &layout};
  }
  static HWY_INLINE VF Scale(DF d, const Step& s) {
    if constexpr (Derived::kHasBias)
      return hn::Set(d, LoadScale(s.scales, s.layout->scale_dtype, s.group));
    else
      return hn::Set(d, s.layout->scale_table[static_cast<uint8_t>(s.scales[s.group])]);
  }
  static HWY_INLINE VF Bias(DF d, const Step& s) {
    return hn::Set(d, LoadScale(s.biases, s.layout->scale_dtype, s.group));
  }
  static HWY_INLINE VF Widen(DF d, const Step& s, size_t v) {
    if constexpr (Derived::kHasBias)
      return hn::MulAdd(Derived::Codes(d, s, v), Scale(d, s), Bias(d, s));
    else
      return hn::Mul(Derived::Codes(d, s, v), Scale(d, s));
  }
};

template <int kBits>
struct AffineFormat : MlxFormat<AffineFormat<kBits>, kBits> {
  static constexpr size_t kStepCodes = kMlxStep;
  static constexpr bool kHasBias = true;
  static HWY_INLINE VF Codes(DF d, const MlxStep& s, size_t v) {
    return hn::ConvertTo(d, hn::BitCast(hn::RebindToSigned<DF>(), StreamCodes<kBits>(s.codes, v)));
  }
};

// E2M1 (sign, 2-bit exponent, 1-bit mantissa): magnitudes m >= 2 are the f32 whose exponent and mantissa
// bits are m << 22 plus 126 << 23 (1, 1.5, 2, 3, 4, 6); m = 0 and 1 are the subnormals 0 and 0.5.
template <size_t kGroup>
struct Fp4Format : MlxFormat<Fp4Format<kGroup>, 4> {
  static constexpr size_t kStepCodes = kGroup < kMlxStep ? kGroup : kMlxStep;
  static constexpr bool kHasBias = false;
  static HWY_INLINE VF Codes(DF d, const MlxStep& s, size_t v) {
    const DU du;
    const hn::RebindToSigned<DF> di;
    const VU codes = StreamCodes<4>(s.codes, v);
    const VU m = hn::And(codes, hn::Set(du, 7u));
    const VF normal = hn::BitCast(d, hn::Add(hn::ShiftLeft<22>(m), hn::Set(du, 126u << 23)));
    const VF subnormal = hn::Mul(hn::ConvertTo(d, hn::BitCast(di, m)), hn::Set(d, 0.5f));
    const auto is_subnormal = hn::RebindMask(d, hn::Lt(hn::BitCast(di, m), hn::Set(di, 2)));
    const VF magnitude = hn::IfThenElse(is_subnormal, subnormal, normal);
    return hn::Or(magnitude, hn::BitCast(d, hn::ShiftLeft<28>(hn::And(codes, hn::Set(du, 8u)))));
  }
};

// E4M3: the 7 magnitude bits placed at f32 bit 20 give 2^-120 times the value (subnormals included),
// and the sign bit moves from bit 7 to bit 31.
struct Fp8Format : MlxFormat<Fp8Format, 8> {
  static constexpr size_t kStepCodes = kMlxStep;
  static constexpr bool kHasBias = false;
  static HWY_INLINE VF Codes(DF d, const MlxStep& s, size_t v) {
    const DU du;
    const VU codes = StreamCodes<8>(s.codes, v);
    const VU bits = hn::Or(hn::ShiftLeft<20>(hn::And(codes, hn::Set(du, 127u))),
                           hn::ShiftLeft<24>(hn::And(codes, hn::Set(du, 128u))));
    return hn::Mul(hn::BitCast(d, bits), hn::Set(d, 0x1p120f));
  }
};

// A matrix in any format: row r's values or codes at w + r * row_bytes, and for the MLX formats its
// scales (and biases) at + r * scale_row_bytes.
struct WeightRows {
  const std::byte* w;
  size_t row_bytes;
  const std::byte* scales = nullptr;
  const std::byte* biases = nullptr;
  size_t scale_row_bytes = 0;
  GroupLayout layout{DType::F32, nullptr, 0};

  RowPtrs row(size_t r) const {
    const size_t s = r * scale_row_bytes;
    return {w + r * row_bytes, scales ? scales + s : nullptr, biases ? biases + s : nullptr};
  }
};

// Where a tile reads and writes: R weight rows first_row + r * row_stride, T token rows of x at stride k,
// outputs y[t * y_token_stride + r * y_row_stride].
struct TileArgs {
  const WeightRows* m;
  size_t first_row, row_stride;
  const float* x;
  size_t k;
  float* y;
  size_t y_row_stride, y_token_stride;
};

// acc[r][t] += one step of row r times token t's activations xs[t * k ...]: each weight vector is widened
// (and scaled) once and then reused for the tile's T tokens.
template <class Format, size_t R, size_t T>
HWY_INLINE void AccumulateWidened(DF d, const typename Format::Step (&step)[R], const float* HWY_RESTRICT xs,
                                  size_t k, VF (&acc)[R][T]) {
#pragma GCC unroll 32
  for (size_t v = 0; v < Format::kStepElems / kLanes; ++v) {
    VF wv[R];
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) wv[r] = Format::Widen(d, step[r], v);
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) {
      const VF xv = hn::LoadU(d, xs + t * k + v * kLanes);
#pragma GCC unroll 16
      for (size_t r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(wv[r], xv, acc[r][t]);
    }
  }
}

// The same for one token and a block format, with one multiplication by the scale per block instead of
// one per weight vector: acc += d * sum(q * x) (+ bias * sum(x), the sum of x shared by the R rows).
// Decode is where the weights stream from DRAM, and this takes a quarter (AVX-512) to three eighths
// (AVX2) of the FMA-port work off each block. For ggml's blocks the products q * x are exact inside
// their FMAs and d * sum exact inside the last one, so this is still a sum of the exact products
// x * (d * q), only grouped by block; MLX's affine codes add the bias term, within f32 rounding.
template <class Format, size_t R>
HWY_INLINE void AccumulateBlockSums(DF d, const typename Format::Step (&step)[R],
                                    const float* HWY_RESTRICT xs, VF (&acc)[R][1]) {
  VF sums[R];
  VF x_sum = hn::Zero(d);
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r) sums[r] = hn::Zero(d);
#pragma GCC unroll 32
  for (size_t v = 0; v < Format::kStepElems / kLanes; ++v) {
    const VF xv = hn::LoadU(d, xs + v * kLanes);
    if constexpr (Format::kHasBias) x_sum = hn::Add(x_sum, xv);
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) sums[r] = hn::MulAdd(Format::Codes(d, step[r], v), xv, sums[r]);
  }
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r) {
    acc[r][0] = hn::MulAdd(sums[r], Format::Scale(d, step[r]), acc[r][0]);
    if constexpr (Format::kHasBias) acc[r][0] = hn::MulAdd(x_sum, Format::Bias(d, step[r]), acc[r][0]);
  }
}

// The R x T dot products of one tile (see TileArgs).
template <class Format, size_t R, size_t T>
HWY_NOINLINE void DotTile(const TileArgs& a) {
  const DF d;
  const float* HWY_RESTRICT x = a.x;
  const size_t k = a.k;
  RowPtrs rows[R];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r) rows[r] = a.m->row(a.first_row + r * a.row_stride);
  VF acc[R][T];
#pragma GCC unroll 16
  for (size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);

  const size_t steps = k / Format::kStepElems;
  for (size_t s = 0; s < steps; ++s) {
    typename Format::Step step[R];
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) step[r] = Format::Open(d, rows[r], a.m->layout, s);
    if constexpr (kSumsPerBlock<Format> && T == 1)
      AccumulateBlockSums<Format, R>(d, step, x + s * Format::kStepElems, acc);
    else
      AccumulateWidened<Format, R, T>(d, step, x + s * Format::kStepElems, k, acc);
  }

#pragma GCC unroll 16
  for (size_t t = 0; t < T; ++t) {
#pragma GCC unroll 16
    for (size_t r = 0; r < R; ++r) {
      float sum = hn::GetLane(hn::SumOfLanes(d, acc[r][t]));
      if constexpr (!Format::kBlocks) {
        constexpr size_t kElemBytes = Format::kStepBytes / Format::kStepElems;
        for (size_t i = steps * Format::kStepElems; i < k; ++i)
          sum += x[t * k + i] * Format::ToFloat(rows[r].w + i * kElemBytes);
      }
      a.y[t * a.y_token_stride + r * a.y_row_stride] = sum;
    }
  }
}

template <class Format, size_t R, size_t... I>
constexpr auto DotTileTable(std::index_sequence<I...>) {
  return std::array<void (*)(const TileArgs&), sizeof...(I)>{&DotTile<Format, R, I + 1>...};
}

// DotTile<R, T> for every token count T in [1, kTileTokens], indexed by T - 1: the last token tile's
// size is known only at run time.
template <class Format, size_t R>
constexpr auto kDotTiles = DotTileTable<Format, R>(std::make_index_sequence<kTileTokens>());

// Output rows [row_begin, row_end) for all tokens, cut into kTileRows stripes (see RowStripes). Token
// tiles run outermost, so every token tile after the first finds the task's weights in L2.
template <class Format>
void MatmulRows(const WeightRows& m, size_t k, const float* x, size_t n_tokens, float* y, size_t rows,
                size_t row_begin, size_t row_end) {
  const detail::RowStripes stripes(row_begin, row_end, kTileRows);
  for (size_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    const size_t tile = std::min(kTileTokens, n_tokens - t0) - 1;
    TileArgs a{&m, 0, stripes.stripe, x + t0 * k, k, nullptr, stripes.stripe, rows};
    for (size_t r = row_begin; r < row_begin + stripes.stripe; ++r) {
      a.first_row = r;
      a.y = y + t0 * rows + r;
      kDotTiles<Format, kTileRows>[tile](a);
    }
    for (size_t r = stripes.leftover_begin; r < row_end; ++r) {
      a.first_row = r;
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

// y = x m^T for rows [0, rows) of m, split over the pool.
template <class Format>
void MatmulFormat(ThreadPool& pool, const WeightRows& m, int64_t rows, size_t k, const float* x,
                  int64_t n_tokens, float* y, size_t y_rows) {
  const float* xs = x;
  if constexpr (Format::kPermutedX) {
    // Reused across calls: the engine calls matmul ~100 times per token with a handful of shapes.
    thread_local std::vector<float> permuted;
    permuted.resize(static_cast<size_t>(n_tokens) * k);
    PermuteForBf16(pool, x, n_tokens, k, permuted.data());
    xs = permuted.data();
  }
  const bool reused = static_cast<size_t>(n_tokens) > kTileTokens;
  const int64_t chunk = detail::rows_per_task(rows, m.row_bytes, pool.size(), kTileRows, reused);
  pool.run((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    MatmulRows<Format>(m, k, xs, static_cast<size_t>(n_tokens), y, y_rows, static_cast<size_t>(begin),
                       static_cast<size_t>(std::min(rows, begin + chunk)));
  });
}

template <class Format>
void MatmulTensor(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  const WeightRows m{w.data, w.row_bytes()};
  MatmulFormat<Format>(pool, m, w.rows(), static_cast<size_t>(w.cols()), x, n_tokens, y,
                       static_cast<size_t>(w.rows()));
}

void MatmulHighway(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  switch (w.dtype) {
    case DType::F32:
      return MatmulTensor<F32Format>(pool, w, x, n_tokens, y);
    case DType::F16:
      return MatmulTensor<F16Format>(pool, w, x, n_tokens, y);
    case DType::BF16:
      return MatmulTensor<Bf16Format>(pool, w, x, n_tokens, y);
    case DType::Q8_0:
      return MatmulTensor<Q8_0Format>(pool, w, x, n_tokens, y);
    case DType::Q4_0:
      return MatmulTensor<Q4_0Format>(pool, w, x, n_tokens, y);
    case DType::Q4_1:
      return MatmulTensor<DecodedBlockFormat<DType::Q4_1, 32, 20>>(pool, w, x, n_tokens, y);
    case DType::Q5_0:
      return MatmulTensor<DecodedBlockFormat<DType::Q5_0, 32, 22>>(pool, w, x, n_tokens, y);
    case DType::Q5_1:
      return MatmulTensor<DecodedBlockFormat<DType::Q5_1, 32, 24>>(pool, w, x, n_tokens, y);
    case DType::Q2_K:
      return MatmulTensor<DecodedBlockFormat<DType::Q2_K, 256, 84>>(pool, w, x, n_tokens, y);
    case DType::Q3_K:
      return MatmulTensor<DecodedBlockFormat<DType::Q3_K, 256, 110>>(pool, w, x, n_tokens, y);
    case DType::Q4_K:
      return MatmulTensor<DecodedBlockFormat<DType::Q4_K, 256, 144>>(pool, w, x, n_tokens, y);
    case DType::Q5_K:
      return MatmulTensor<DecodedBlockFormat<DType::Q5_K, 256, 176>>(pool, w, x, n_tokens, y);
    case DType::Q6_K:
      return MatmulTensor<DecodedBlockFormat<DType::Q6_K, 256, 210>>(pool, w, x, n_tokens, y);
    case DType::IQ4_NL:
      return MatmulTensor<DecodedBlockFormat<DType::IQ4_NL, 32, 18>>(pool, w, x, n_tokens, y);
    case DType::IQ4_XS:
      return MatmulTensor<DecodedBlockFormat<DType::IQ4_XS, 256, 136>>(pool, w, x, n_tokens, y);
    default:
      HWY_ABORT("matmul_highway: unsupported weight dtype");
  }
}

// StreamCodes reads up to kStreamOverread bytes past a step, so the last rows, whose over-read could pass
// the end of the codes (the end of an mmapped file), run from a zero-padded copy.
template <class Format>
void MatmulMlxFormat(ThreadPool& pool, const QuantizedMatrix& q, const GroupLayout& layout, const float* x,
                     int64_t n_tokens, float* y) {
  const size_t row_bytes = q.code_row_bytes(), k = static_cast<size_t>(q.cols);
  const WeightRows m{q.codes, row_bytes, q.scales, q.biases, q.scale_row_bytes(), layout};
  const int64_t tail = std::min<int64_t>(q.rows, static_cast<int64_t>(kStreamOverread / row_bytes + 1));
  const int64_t body = q.rows - tail;
  const auto y_rows = static_cast<size_t>(q.rows);
  if (body > 0) MatmulFormat<Format>(pool, m, body, k, x, n_tokens, y, y_rows);

  thread_local std::vector<std::byte> padded;
  padded.assign(static_cast<size_t>(tail) * row_bytes + kStreamOverread, std::byte{0});
  std::memcpy(padded.data(), q.codes + static_cast<size_t>(body) * row_bytes, static_cast<size_t>(tail) * row_bytes);
  const WeightRows last = {padded.data(), row_bytes, m.row(static_cast<size_t>(body)).scales,
                           m.row(static_cast<size_t>(body)).biases, m.scale_row_bytes, layout};
  MatmulRows<Format>(last, k, x, static_cast<size_t>(n_tokens), y + body, y_rows, 0,
                     static_cast<size_t>(tail));
}

void MatmulMlx(ThreadPool& pool, const QuantizedMatrix& q, const float* scale_table, const float* x,
               int64_t n_tokens, float* y) {
  const QuantParams& p = q.params;
  const size_t step = p.mode == QuantMode::kNvfp4 ? 16 : kMlxStep;
  const GroupLayout layout{q.scale_dtype, scale_table,
                           static_cast<unsigned>(std::countr_zero(static_cast<size_t>(p.group_size) / step))};
  switch (p.mode) {
    case QuantMode::kNvfp4:
      return MatmulMlxFormat<Fp4Format<16>>(pool, q, layout, x, n_tokens, y);
    case QuantMode::kMxfp4:
      return MatmulMlxFormat<Fp4Format<32>>(pool, q, layout, x, n_tokens, y);
    case QuantMode::kMxfp8:
      return MatmulMlxFormat<Fp8Format>(pool, q, layout, x, n_tokens, y);
    case QuantMode::kAffine:
      break;
  }
  switch (p.bits) {
    case 2:
      return MatmulMlxFormat<AffineFormat<2>>(pool, q, layout, x, n_tokens, y);
    case 3:
      return MatmulMlxFormat<AffineFormat<3>>(pool, q, layout, x, n_tokens, y);
    case 4:
      return MatmulMlxFormat<AffineFormat<4>>(pool, q, layout, x, n_tokens, y);
    case 5:
      return MatmulMlxFormat<AffineFormat<5>>(pool, q, layout, x, n_tokens, y);
    case 6:
      return MatmulMlxFormat<AffineFormat<6>>(pool, q, layout, x, n_tokens, y);
    case 8:
      return MatmulMlxFormat<AffineFormat<8>>(pool, q, layout, x, n_tokens, y);
    default:
      HWY_ABORT("matmul_highway: unsupported MLX bit width");
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
HWY_EXPORT(MatmulMlx);
HWY_EXPORT(TargetName);

namespace detail {
void matmul_highway(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulHighway)(pool, w, x, n_tokens, y);
}
void matmul_highway_mlx(ThreadPool& pool, const QuantizedMatrix& w, const float* x, int64_t n_tokens, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulMlx)(pool, w, scale_table(w.params.mode), x, n_tokens, y);
}
const char* highway_target_name() {
  return HWY_DYNAMIC_DISPATCH(TargetName)();
}
}  // namespace detail
}  // namespace ge::kernels
#endif  // HWY_ONCE
