// AVX2 integer kernel for MLX-quantized weights (affine 4 and 8-bit, nvfp4, mxfp4) with activations
// quantized to 8-bit blocks (Precision::kReducedActivations), as llama.cpp computes its quantized products:
// each token's activations are cut into blocks of 32 (scale d = max|x| / 127, codes round(x / d)), so a
// weight block times an activation block is one vpmaddubsw + vpmaddwd integer dot product, turned into f32
// once per block (times d) and once per group (times the weights' scale). One vpmaddubsw does 32 products
// where an f32 FMA does 8, which is what lets decode keep up with the memory bandwidth.
//
// The affine bias term bias * sum(x) uses the exact f32 sum of each group of x, not its codes.
// Weight codes become bytes per format (see the Codes structs): 4-bit codes are unsigned and multiply the
// activation codes as they are; 8-bit codes and E2M1 values are signed, multiplied through the usual
// |w| * sign(x, w) trick since vpmaddubsw takes one unsigned operand. A 32-code block of 4-bit codes is 16
// bytes whose low nibbles are the even elements and high nibbles the odd ones: unpacked as [low | high], it
// meets activation codes stored in that order.
//
// Only the functions marked GE_AVX2 use AVX2; the rest of the file is baseline x86-64.
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/mlx_quant.h"

#define GE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace ge::kernels::detail {
namespace {

constexpr int64_t kBlock = 32;
constexpr size_t kTileRows = 4;

// The activations of n tokens: for token t and block b, 32 codes at codes[(t * blocks + b) * 32] (in
// [even, odd] order for the nibble formats) and their scale at scales[t * blocks + b]; the f32 sum of x
// over each weight group at group_sums[t * groups + g].
struct Activations {
  std::vector<int8_t> codes;
  std::vector<float> scales, group_sums;
  int64_t blocks = 0, groups = 0;
};

void quantize_activations(const float* x, int64_t n_tokens, int64_t k, int64_t group, bool even_odd,
                          Activations& a) {
  a.blocks = k / kBlock;
  a.groups = k / group;
  a.codes.resize(static_cast<size_t>(n_tokens * k));
  a.scales.resize(static_cast<size_t>(n_tokens * a.blocks));
  a.group_sums.assign(static_cast<size_t>(n_tokens * a.groups), 0.0f);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t b = 0; b < a.blocks; ++b) {
      const float* xb = x + t * k + b * kBlock;
      float amax = 0, sum = 0;
      for (int64_t i = 0; i < kBlock; ++i) {
        amax = std::max(amax, std::abs(xb[i]));
        sum += xb[i];
      }
      const float d = amax / 127, id = d != 0 ? 1 / d : 0;
      a.scales[t * a.blocks + b] = d;
      a.group_sums[t * a.groups + b * kBlock / group] += sum;
      int8_t* q = a.codes.data() + (t * a.blocks + b) * kBlock;
      for (int64_t i = 0; i < kBlock; ++i) {
        const int64_t slot = even_odd ? (i % 2) * (kBlock / 2) + i / 2 : i;
        q[slot] = static_cast<int8_t>(std::lrintf(xb[i] * id));
      }
    }
  }
  // A group of 16 (nvfp4) is half a block: its sum was added to the block's first group only.
  if (group < kBlock)
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t g = 0; g < a.groups; ++g) {
        float sum = 0;
        for (int64_t i = 0; i < group; ++i) sum += x[t * k + g * group + i];
        a.group_sums[t * a.groups + g] = sum;
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

// Per format: the 32 codes of block b of a row as bytes, whether they are signed, what one code unit is
// worth relative to the stored scale, and the constant its bias absorbs (8-bit codes are stored as
// q - 128, so w = s * (q - 128) + (bias + 128 s)).
struct Affine4Codes {
  static constexpr bool kSigned = false, kEvenOdd = true;
  static constexpr float kUnit = 1.0f, kBiasShift = 0.0f;
  static constexpr size_t kBlockBytes = 16;
  GE_AVX2 static __m256i load(const std::byte* block) {
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(c, 4), c), _mm256_set1_epi8(0x0F));
  }
};

struct Affine8Codes {
  static constexpr bool kSigned = true, kEvenOdd = false;
  static constexpr float kUnit = 1.0f, kBiasShift = 128.0f;
  static constexpr size_t kBlockBytes = 32;
  GE_AVX2 static __m256i load(const std::byte* block) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
};

// E2M1 values times 2 are the integers 0, 1, 2, 3, 4, 6, 8, 12 (and their negatives): one vpshufb.
struct Fp4Codes {
  static constexpr bool kSigned = true, kEvenOdd = true;
  static constexpr float kUnit = 0.5f, kBiasShift = 0.0f;
  static constexpr size_t kBlockBytes = 16;
  GE_AVX2 static __m256i load(const std::byte* block) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12, 0, 1, 2, 3, 4,
                                         6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    return _mm256_shuffle_epi8(lut, Affine4Codes::load(block));
  }
};

// 8 int32 partial sums of the 32 products of a weight block and an activation block.
template <class Codes>
GE_AVX2 inline __m256i block_dot(__m256i w, __m256i x) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (Codes::kSigned)
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), ones);
  else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
}

// The weights' scale for each int32 lane of a block's sums: one scale for groups of 32 or more; for groups
// of 16 (nvfp4) lanes 0-1 and 4-5 hold products of the first group (low nibbles 0-7, high nibbles 0-7,
// four bytes a lane), lanes 2-3 and 6-7 of the second.
GE_AVX2 inline __m256 lane_scales(float first, float second) {
  return _mm256_setr_ps(first, first, second, second, first, first, second, second);
}

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

// R rows (row0 + r * stride) times one token.
template <class Codes, size_t R>
GE_AVX2 void dot_rows(const RowsArgs& args, size_t row0, size_t stride) {
  const QuantizedMatrix& m = *args.m;
  const Activations& a = *args.a;
  const int64_t group = m.params.group_size;
  const int64_t blocks_per_unit = std::max<int64_t>(1, group / kBlock);  // blocks under one scale
  const int8_t* xq = a.codes.data() + args.token * a.blocks * kBlock;
  const float* xd = a.scales.data() + args.token * a.blocks;
  const float* xsum = a.group_sums.data() + args.token * a.groups;

  const std::byte* codes[R];
  const std::byte* scales[R];
  const std::byte* biases[R];
  for (size_t r = 0; r < R; ++r) {
    const size_t row = row0 + r * stride;
    codes[r] = m.codes + row * m.code_row_bytes();
    scales[r] = m.scales + row * m.scale_row_bytes();
    biases[r] = m.biases ? m.biases + row * m.scale_row_bytes() : nullptr;
  }
  __m256 acc[R];
  float bias_acc[R] = {};
  for (size_t r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();

  for (int64_t unit = 0; unit < a.blocks / blocks_per_unit; ++unit) {
    __m256 unit_acc[R];
    for (size_t r = 0; r < R; ++r) unit_acc[r] = _mm256_setzero_ps();
    for (int64_t j = 0; j < blocks_per_unit; ++j) {
      const int64_t b = unit * blocks_per_unit + j;
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kBlock));
      const __m256 d = _mm256_set1_ps(xd[b]);
      for (size_t r = 0; r < R; ++r) {
        const __m256i w = Codes::load(codes[r] + b * Codes::kBlockBytes);
        unit_acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot<Codes>(w, x)), d, unit_acc[r]);
      }
    }
    for (size_t r = 0; r < R; ++r) {
      __m256 s;
      if (group < kBlock)
        s = lane_scales(load_scale(m, scales[r], 2 * unit), load_scale(m, scales[r], 2 * unit + 1));
      else
        s = _mm256_set1_ps(load_scale(m, scales[r], unit));
      acc[r] = _mm256_fmadd_ps(unit_acc[r], s, acc[r]);
    }
  }
  for (size_t r = 0; r < R; ++r) {
    if (biases[r])
      for (int64_t g = 0; g < a.groups; ++g) {
        const float s = load_scale(m, scales[r], g), bias = load_scale(m, biases[r], g);
        bias_acc[r] += (bias + Codes::kBiasShift * s) * xsum[g];
      }
    args.y[args.token * m.rows + static_cast<int64_t>(row0 + r * stride)] =
        horizontal_sum(acc[r]) * Codes::kUnit + bias_acc[r];
  }
}

template <class Codes>
void matmul_rows(const QuantizedMatrix& m, const Activations& a, int64_t n_tokens, float* y, size_t begin,
                 size_t end) {
  const RowStripes stripes(begin, end, kTileRows);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const RowsArgs args{&m, &a, t, y};
    for (size_t r = begin; r < begin + stripes.stripe; ++r) dot_rows<Codes, kTileRows>(args, r, stripes.stripe);
    for (size_t r = stripes.leftover_begin; r < end; ++r) dot_rows<Codes, 1>(args, r, 0);
  }
}

template <class Codes>
void matmul_format(ThreadPool& pool, const QuantizedMatrix& m, const float* x, int64_t n_tokens, float* y) {
  // Reused across calls; named through a reference, since inside the lambda below the thread_local itself
  // would be each worker's own (empty) copy.
  thread_local Activations reused;
  Activations& a = reused;
  quantize_activations(x, n_tokens, m.cols, m.params.group_size, Codes::kEvenOdd, a);
  const size_t row_bytes = m.code_row_bytes() + m.scale_row_bytes() * (m.biases ? 2 : 1);
  const int64_t chunk = rows_per_task(m.rows, row_bytes, pool.size(), kTileRows, n_tokens > 1);
  pool.run((m.rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t begin = task * chunk;
    matmul_rows<Codes>(m, a, n_tokens, y, static_cast<size_t>(begin),
                       static_cast<size_t>(std::min(m.rows, begin + chunk)));
  });
}

}  // namespace

bool mlx_int8_supported(const QuantizedMatrix& m) {
  const QuantParams& p = m.params;
  if (m.cols % kBlock != 0) return false;
  return (p.mode == QuantMode::kAffine && (p.bits == 4 || p.bits == 8)) || p.mode == QuantMode::kNvfp4 ||
         p.mode == QuantMode::kMxfp4;
}

void matmul_mlx_avx2(ThreadPool& pool, const QuantizedMatrix& m, const float* x, int64_t n_tokens, float* y) {
  if (m.params.mode == QuantMode::kAffine)
    return m.params.bits == 4 ? matmul_format<Affine4Codes>(pool, m, x, n_tokens, y)
                              : matmul_format<Affine8Codes>(pool, m, x, n_tokens, y);
  matmul_format<Fp4Codes>(pool, m, x, n_tokens, y);
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
