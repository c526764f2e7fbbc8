// AVX2 integer kernel for MLX-quantized weights (affine 4 and 8-bit, nvfp4, mxfp4) with activations
// quantized to 8-bit blocks (Precision::kReducedActivations), as llama.cpp computes its quantized products.
// Each token's activations are cut into units of one weight group (32 values for nvfp4's groups of 16 and
// for 8-bit codes) with one scale each (d = max|x| / 127, codes round(x / d)), so that a weight group times an activation
// unit is one integer dot product: vpmaddubsw products summed in 16 bits across the group where they fit,
// one vpmaddwd, then one conversion to f32 and one FMA by d times the weights' scale. vpmaddubsw does 32
// products where an f32 FMA does 8, and the per-group tail is paid once per group, not per 32 values:
// that is what lets decode keep up with the memory bandwidth.
//
// The affine bias term bias * sum(x) uses the exact f32 sum of each group of x, not its codes.
// Weight codes become bytes per format (see the Codes structs): 4-bit codes are unsigned and multiply the
// activation codes as they are; 8-bit codes and E2M1 values are signed, multiplied through the usual
// |w| * sign(x, w) trick since vpmaddubsw takes one unsigned operand. 4-bit codes come in bytes whose low
// nibble is the even element and the high nibble the odd one: each chunk of up to 64 codes unpacks as
// [low nibbles | high nibbles], and the activation codes are stored in that order.
//
// Only the functions marked GE_AVX2 use AVX2; the rest of the file is baseline x86-64.
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/mlx_quant.h"

#define GE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace ge::kernels::detail {
namespace {

constexpr size_t kTileRows = 4;

// The activations of n tokens in units of `unit` values: for token t and unit u, `unit` codes at
// codes[(t * units + u) * unit] (4-bit formats: each chunk of min(unit, 64) in [even, odd] order) and their
// scale at scales[t * units + u]; the f32 sum of x over each weight group at group_sums[t * groups + g].
struct Activations {
  std::vector<int8_t> codes;
  std::vector<float> scales, group_sums;
  int64_t unit = 0, units = 0, groups = 0;
};

void quantize_activations(const float* x, int64_t n_tokens, int64_t k, int64_t unit, int64_t group,
                          bool even_odd, Activations& a) {
  a.unit = unit;
  a.units = k / unit;
  a.groups = k / group;
  a.codes.resize(static_cast<size_t>(n_tokens * k));
  a.scales.resize(static_cast<size_t>(n_tokens * a.units));
  a.group_sums.resize(static_cast<size_t>(n_tokens * a.groups));
  const int64_t chunk = std::min<int64_t>(unit, 64);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x + t * k;
    for (int64_t g = 0; g < a.groups; ++g) {
      float sum = 0;
      for (int64_t i = g * group; i < (g + 1) * group; ++i) sum += xt[i];
      a.group_sums[t * a.groups + g] = sum;
    }
    for (int64_t u = 0; u < a.units; ++u) {
      const float* xu = xt + u * unit;
      float amax = 0;
      for (int64_t i = 0; i < unit; ++i) amax = std::max(amax, std::abs(xu[i]));
      const float d = amax / 127, id = d != 0 ? 1 / d : 0;
      a.scales[t * a.units + u] = d;
      int8_t* q = a.codes.data() + (t * a.units + u) * unit;
      for (int64_t i = 0; i < unit; ++i) {
        const int64_t in_chunk = i % chunk;
        const int64_t slot = even_odd ? i - in_chunk + (in_chunk % 2) * (chunk / 2) + in_chunk / 2 : i;
        q[slot] = static_cast<int8_t>(std::lrintf(xu[i] * id));
      }
    }
  }
}

float load_scale(const QuantizedMatrix& m, const std::byte* row_scales, int64_t g) {
  if (m.scale_dtype == DType::U8) return scale_table(m.params.mode)[static_cast<uint8_t>(row_scales[g])];
  if (m.scale_dtype == DType::BF16) {
    uint16_t h;
    std::memcpy(&h, row_scales + g * 2, 2);
    return bf16_to_f32(h);
  }
  return load_float(row_scales, m.scale_dtype, g);
}

// w . x for 32 byte pairs, as 16 sums of adjacent products (int16; no pair overflows for |w| <= 15
// unsigned, or any signed w against |x| <= 127).
template <bool kSigned>
GE_AVX2 inline __m256i pair_products(__m256i w, __m256i x) {
  if constexpr (kSigned)
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  else
    return _mm256_maddubs_epi16(w, x);
}

GE_AVX2 inline __m256i widen_sum(__m256i pairs) { return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)); }

// 4-bit codes (affine: unsigned; E2M1: through a 16-entry table to twice their value, signed), `kUnit` of
// them per unit. A unit's int16 pair sums add up without overflow: at most 128 codes of |w| <= 15 times
// |x| <= 127 put 2 * 2 * 15 * 127 = 7620 in each int16 lane.
template <bool kFp4, int64_t kUnit>
struct NibbleCodes {
  static constexpr bool kEvenOdd = true;
  static constexpr float kUnitValue = kFp4 ? 0.5f : 1.0f, kBiasShift = 0.0f;
  GE_AVX2 static __m256i lookup(__m256i nibbles) {
    if constexpr (!kFp4) return nibbles;
    const __m256i lut = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12, 0, 1, 2, 3, 4,
                                         6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    return _mm256_shuffle_epi8(lut, nibbles);
  }
  GE_AVX2 static __m256i dot(const std::byte* codes, const int8_t* x) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    if constexpr (kUnit == 32) {
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
      const __m256i w = lookup(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(c, 4), c), low));
      return widen_sum(pair_products<kFp4>(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))));
    } else {
      __m256i pairs = _mm256_setzero_si256();
      for (int64_t chunk = 0; chunk < kUnit / 64; ++chunk) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + chunk * 32));
        const __m256i even = lookup(_mm256_and_si256(c, low));
        const __m256i odd = lookup(_mm256_and_si256(_mm256_srli_epi16(c, 4), low));
        const auto* xc = reinterpret_cast<const __m256i*>(x + chunk * 64);
        pairs = _mm256_add_epi16(pairs, pair_products<kFp4>(even, _mm256_loadu_si256(xc)));
        pairs = _mm256_add_epi16(pairs, pair_products<kFp4>(odd, _mm256_loadu_si256(xc + 1)));
      }
      return widen_sum(pairs);
    }
  }
};

// 8-bit affine codes, multiplied as the signed q - 128 (so w = s * (q - 128) + (bias + 128 s)), in units
// of 32 whatever the group: a pair sum can reach 2 * 128 * 127, so an int16 lane holds no more than one,
// and activation blocks of 32 keep the activations as close as llama.cpp's Q8_0 rounding does (blocks of
// 64 measured 0.28 against 0.18 on gemma3-tiny's logits).
struct Affine8Codes {
  static constexpr bool kEvenOdd = false;
  static constexpr float kUnitValue = 1.0f, kBiasShift = 128.0f;
  GE_AVX2 static __m256i dot(const std::byte* codes, const int8_t* x) {
    const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes)),
                                       _mm256_set1_epi8(static_cast<char>(0x80)));
    return widen_sum(pair_products<true>(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))));
  }
};

GE_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct RowsArgs {
  const QuantizedMatrix* m;
  const Activations* a;
  int64_t token;
  float* y;  // y[token * m->rows + row]
};

// Each row's scales, read once (whatever their format) into f32 per unit: for groups of 16 (nvfp4) the two
// scales of each unit, else the scale of the unit's group (repeated when 8-bit groups span several units).
// Returns the row's affine offset term: the sum over groups of (bias + shift * scale) * sum(x), with the
// exact sums of x.
float read_row_scales(const QuantizedMatrix& m, const Activations& a, int64_t token, size_t row, float shift,
                      float* unit_scales) {
  const std::byte* scales = m.scales + row * m.scale_row_bytes();
  const int64_t groups = a.groups, units_per_group = std::max<int64_t>(1, m.params.group_size / a.unit);
  for (int64_t g = 0; g < groups; ++g) {
    const float s = load_scale(m, scales, g);
    if (m.params.group_size < a.unit)
      unit_scales[g] = s;
    else
      std::fill_n(unit_scales + g * units_per_group, units_per_group, s);
  }
  if (!m.biases) return 0;
  const std::byte* biases = m.biases + row * m.scale_row_bytes();
  const float* sums = a.group_sums.data() + token * groups;
  float offset = 0;
  for (int64_t g = 0; g < groups; ++g) offset += (load_scale(m, biases, g) + shift * load_scale(m, scales, g)) * sums[g];
  return offset;
}

// R rows (row0 + r * stride) times one token.
template <class Codes, size_t R>
GE_AVX2 void dot_rows(const RowsArgs& args, size_t row0, size_t stride, float* scratch) {
  const QuantizedMatrix& m = *args.m;
  const Activations& a = *args.a;
  const int64_t units = a.units;
  const size_t unit_bytes = static_cast<size_t>(a.unit * m.params.bits / 8);
  const int8_t* xq = a.codes.data() + args.token * units * a.unit;
  const float* xd = a.scales.data() + args.token * units;
  const bool pair_scales = m.params.group_size < a.unit;
  const int64_t scales_per_row = pair_scales ? 2 * units : units;

  const std::byte* codes[R];
  const float* unit_scales[R];
  float offsets[R];
  __m256 acc[R];
  for (size_t r = 0; r < R; ++r) {
    const size_t row = row0 + r * stride;
    codes[r] = m.codes + row * m.code_row_bytes();
    unit_scales[r] = scratch + r * scales_per_row;
    offsets[r] = read_row_scales(m, a, args.token, row, Codes::kBiasShift, scratch + r * scales_per_row);
    acc[r] = _mm256_setzero_ps();
  }
  for (int64_t u = 0; u < units; ++u) {
    const int8_t* x = xq + u * a.unit;
    for (size_t r = 0; r < R; ++r) {
      const __m256 sums = _mm256_cvtepi32_ps(Codes::dot(codes[r] + u * unit_bytes, x));
      __m256 scale;
      if (pair_scales) {
        // Lanes 0-1 and 4-5 hold products of the unit's first group of 16 (its low nibbles 0-7 and high
        // nibbles 0-7, four bytes a lane), lanes 2-3 and 6-7 of the second.
        const float first = xd[u] * unit_scales[r][2 * u], second = xd[u] * unit_scales[r][2 * u + 1];
        scale = _mm256_setr_ps(first, first, second, second, first, first, second, second);
      } else {
        scale = _mm256_set1_ps(xd[u] * unit_scales[r][u]);
      }
      acc[r] = _mm256_fmadd_ps(sums, scale, acc[r]);
    }
  }
  for (size_t r = 0; r < R; ++r)
    args.y[args.token * m.rows + static_cast<int64_t>(row0 + r * stride)] =
        horizontal_sum(acc[r]) * Codes::kUnitValue + offsets[r];
}

template <class Codes>
void matmul_rows(const QuantizedMatrix& m, const Activations& a, int64_t n_tokens, float* y, size_t begin,
                 size_t end) {
  thread_local std::vector<float> scratch;  // this worker's rows' scales (see read_row_scales)
  scratch.resize(kTileRows * 2 * static_cast<size_t>(a.units));
  const RowStripes stripes(begin, end, kTileRows);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const RowsArgs args{&m, &a, t, y};
    for (size_t r = begin; r < begin + stripes.stripe; ++r)
      dot_rows<Codes, kTileRows>(args, r, stripes.stripe, scratch.data());
    for (size_t r = stripes.leftover_begin; r < end; ++r) dot_rows<Codes, 1>(args, r, 0, scratch.data());
  }
}

template <class Codes, int64_t kUnit>
void matmul_format(ThreadPool& pool, const QuantizedMatrix& m, const float* x, int64_t n_tokens, float* y) {
  // Reused across calls; named through a reference, since inside the lambda below the thread_local itself
  // would be each worker's own (empty) copy.
  thread_local Activations reused;
  Activations& a = reused;
  quantize_activations(x, n_tokens, m.cols, kUnit, m.params.group_size, Codes::kEvenOdd, a);
  const size_t row_bytes = m.code_row_bytes() + m.scale_row_bytes() * (m.biases ? 2 : 1);
  const int64_t chunk = rows_per_task(m.rows, row_bytes, pool.size(), kTileRows, n_tokens > 1);
  pool.run((m.rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    matmul_rows<Codes>(m, a, n_tokens, y, static_cast<size_t>(begin),
                       static_cast<size_t>(std::min(m.rows, begin + chunk)));
  });
}

// One instantiation per unit size (the group size, or 32 for nvfp4).
template <template <int64_t> class Codes>
void matmul_by_unit(ThreadPool& pool, const QuantizedMatrix& m, const float* x, int64_t n_tokens, float* y) {
  switch (m.params.group_size) {
    case 128:
      return matmul_format<Codes<128>, 128>(pool, m, x, n_tokens, y);
    case 64:
      return matmul_format<Codes<64>, 64>(pool, m, x, n_tokens, y);
    default:
      return matmul_format<Codes<32>, 32>(pool, m, x, n_tokens, y);
  }
}

template <int64_t kUnit>
using Affine4Codes = NibbleCodes<false, kUnit>;
template <int64_t kUnit>
using Fp4Codes = NibbleCodes<true, kUnit>;

}  // namespace

bool mlx_int8_supported(const QuantizedMatrix& m) {
  const QuantParams& p = m.params;
  if (m.cols % 32 != 0) return false;
  return (p.mode == QuantMode::kAffine && (p.bits == 4 || p.bits == 8)) || p.mode == QuantMode::kNvfp4 ||
         p.mode == QuantMode::kMxfp4;
}

void matmul_mlx_avx2(ThreadPool& pool, const QuantizedMatrix& m, const float* x, int64_t n_tokens, float* y) {
  if (m.params.mode != QuantMode::kAffine) return matmul_by_unit<Fp4Codes>(pool, m, x, n_tokens, y);
  if (m.params.bits == 4) return matmul_by_unit<Affine4Codes>(pool, m, x, n_tokens, y);
  matmul_format<Affine8Codes, 32>(pool, m, x, n_tokens, y);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace ge::kernels::detail

#else  // !__x86_64__

namespace ge::kernels::detail {
bool mlx_int8_supported(const QuantizedMatrix&) { return false; }
void matmul_mlx_avx2(ThreadPool&, const QuantizedMatrix&, const float*, int64_t, float*) {}
bool cpu_has_avx2() { return false; }
}  // namespace ge::kernels::detail

#endif
