#include "kernels/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ge::kernels {
namespace {

void store_f16(float v, std::byte* at) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(at, &h, 2);
}

// The value a stored fp16 field decodes to: the K types recompute their codes with it.
float rounded_to_f16(float v) {
  return f16_to_f32(f32_to_f16(v));
}

// Round to nearest, ties to even. Adding 1.5 * 2^23 leaves no fraction bits in the mantissa, so the
// addition itself rounds, and the integer sits in the low 23 bits (offset by 2^22). Valid for |v| < 2^22;
// cheaper than nearbyintf, a library call on baseline x86-64. Same results as ggml's nearest_int.
int nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007FFFFF) - 0x00400000;
}

// ---- 32-value blocks

// The codes use the f32 scale; only the stored one is rounded to fp16, as in ggml.
void quantize_block_q8_0(const float* x, std::byte* block) {
  float amax = 0.0f;
  for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(d, block);
  for (int64_t j = 0; j < kQuantBlock; ++j)
    block[2 + j] = static_cast<std::byte>(static_cast<int8_t>(std::roundf(x[j] * id)));
}

// The block's value of largest magnitude, sign included (ties keep the first, as ggml does).
float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int64_t j = 0; j < kQuantBlock; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// Q4_0 / Q5_0: the scale maps the largest-magnitude value, sign included, to code 0 (= -half * d):
// dividing by -half rather than half spends the asymmetric end of [-half, half - 1] on that value.
// As ggml: x * id + half + 0.5 truncated through int8_t rounds half up; a value of magnitude amax and the
// opposite sign to max lands on 2 half + 0.5, hence the cap at 2 half - 1.
struct SymmetricCodes {
  float d, id;
  int half;
  uint8_t operator()(float v) const {
    const int code = static_cast<int8_t>(v * id + (static_cast<float>(half) + 0.5f));
    return static_cast<uint8_t>(std::min(2 * half - 1, code));
  }
};

SymmetricCodes symmetric_codes(const float* x, int half) {
  const float d = signed_absmax(x) / static_cast<float>(-half);
  return {d, d != 0.0f ? 1.0f / d : 0.0f, half};
}

// 32 codes of up to 4 bits as 16 bytes: value j in the low nibble of byte j, j + 16 in the high one.
void pack_nibbles(const uint8_t* codes, std::byte* out) {
  constexpr int64_t half = kQuantBlock / 2;
  for (int64_t j = 0; j < half; ++j)
    out[j] = static_cast<std::byte>((codes[j] & 0x0F) | (codes[j + half] & 0x0F) << 4);
}

// Q5_0 / Q5_1's fifth bits: bit j of a little-endian u32 is that of value j.
void pack_fifth_bits(const uint8_t* codes, std::byte* out) {
  uint32_t qh = 0;
  for (int j = 0; j < kQuantBlock; ++j) qh |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
  std::memcpy(out, &qh, 4);
}

void quantize_block_q4_0(const float* x, std::byte* block) {
  const SymmetricCodes code = symmetric_codes(x, 8);
  store_f16(code.d, block);
  uint8_t codes[kQuantBlock];
  for (int64_t j = 0; j < kQuantBlock; ++j) codes[j] = code(x[j]);
  pack_nibbles(codes, block + 2);
}

void quantize_block_q5_0(const float* x, std::byte* block) {
  const SymmetricCodes code = symmetric_codes(x, 16);
  store_f16(code.d, block);
  uint8_t codes[kQuantBlock];
  for (int64_t j = 0; j < kQuantBlock; ++j) codes[j] = code(x[j]);
  pack_fifth_bits(codes, block + 2);
  pack_nibbles(codes, block + 6);
}

// Q5_1: the block's range in 31 steps from its minimum; codes round half up from the f32 step.
void quantize_block_q5_1(const float* x, std::byte* block) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int64_t j = 0; j < kQuantBlock; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(d, block);
  store_f16(min, block + 2);
  uint8_t codes[kQuantBlock];
  for (int64_t j = 0; j < kQuantBlock; ++j) codes[j] = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
  pack_fifth_bits(codes, block + 4);
  pack_nibbles(codes, block + 8);
}

// ---- K types: Q4_K / Q5_K (affine sub-blocks of 32)

constexpr int kAffineSub = 32;
constexpr int kAffineSubs = kSuperBlock / kAffineSub;

// The candidate scales the affine search tries, beyond the plain range / nmax: candidate i maps the
// sub-block's range onto nmax + first + step * i code steps.
struct ScaleCandidates {
  float first, step;
  int count;  // candidates i = 0 .. count
};
constexpr ScaleCandidates kQ4_KCandidates{-1.0f, 0.1f, 20}, kQ5_KCandidates{-0.5f, 0.1f, 15};

// A sub-block's affine fit: x ~= scale * code - neg_min, neg_min >= 0 (the minimum is never above 0, so
// zero stays representable and the stored minimum needs no sign).
struct AffineFit {
  float scale = 0, neg_min = 0;
};

// Weighted squared error of codes under (scale, min): each difference squared, then weighted.
float affine_error(const float* x, const float* w, const uint8_t* codes, float scale, float min) {
  float error = 0;
  for (int i = 0; i < kAffineSub; ++i) {
    const float diff = scale * static_cast<float>(codes[i]) + min - x[i];
    error += w[i] * (diff * diff);
  }
  return error;
}

// Codes for `iscale` steps per unit above `min`, clamped to [0, nmax].
void affine_codes(const float* x, float iscale, float min, int nmax, uint8_t* codes) {
  for (int i = 0; i < kAffineSub; ++i)
    codes[i] = static_cast<uint8_t>(std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
}

// ggml's make_qkx2_quants: starts from the range's own scale (min and max on the grid), then for each
// candidate scale takes the codes it gives and solves the weighted least-squares (scale, min) for those
// codes, keeping the fit of least weighted squared error. A positive least-squares minimum is replaced by
// 0 (and the scale refit through the origin): codes only add to the minimum. As in ggml, the candidates
// after an improvement measure from the best fit's minimum so far, not the sub-block's (codes and range
// both): that is part of what the search produces, so bit-exactness keeps it.
AffineFit fit_affine(const float* x, const float* w, int nmax, ScaleCandidates candidates, uint8_t* codes) {
  float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < kAffineSub; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(codes, codes + kAffineSub, uint8_t{0});
    return {0.0f, -min};
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  affine_codes(x, iscale, min, nmax, codes);
  float best_error = affine_error(x, w, codes, scale, min);

  uint8_t trial[kAffineSub];
  for (int c = 0; c <= candidates.count; ++c) {
    iscale =
        (candidates.first + candidates.step * static_cast<float>(c) + static_cast<float>(nmax)) / (max - min);
    affine_codes(x, iscale, min, nmax, trial);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < kAffineSub; ++i) {
      const float wl = w[i] * static_cast<float>(trial[i]);
      sum_l += wl;
      sum_l2 += wl * static_cast<float>(trial[i]);
      sum_xl += wl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;  // all codes equal: no line through them
    float trial_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float trial_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (trial_min > 0) {
      trial_min = 0;
      trial_scale = sum_xl / sum_l2;
    }
    const float error = affine_error(x, w, trial, trial_scale, trial_min);
    if (error < best_error) {
      std::copy(trial, trial + kAffineSub, codes);
      best_error = error;
      scale = trial_scale;
      min = trial_min;
    }
  }
  return {scale, -min};
}

// ggml's weights for the affine search: the sub-block's RMS plus each value's magnitude, so large values
// count more without the small ones counting for nothing.
void affine_weights(const float* x, float* w) {
  float sum_x2 = 0;
  for (int i = 0; i < kAffineSub; ++i) sum_x2 += x[i] * x[i];
  const float rms = std::sqrt(sum_x2 / kAffineSub);
  for (int i = 0; i < kAffineSub; ++i) w[i] = rms + std::fabs(x[i]);
}

// A value in [0, max] as a 6-bit multiple of max / 63 (inv = 63 / max). ggml stores nearest_int's result
// in a uint8_t before capping it, so a negative value (a degenerate negative scale) wraps and caps to 63;
// kept for bit-exactness.
uint8_t six_bit_level(float v, float inv) {
  return std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv * v)));
}

// The 12 bytes of 8 6-bit scales and 8 6-bit mins (read back by ggml's get_scale_min_k4): sub-blocks 0-3
// in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 with their low nibbles in bytes
// 8-11 (scale low, min high) and their top 2 bits in the top bits of bytes 0-3 (scales) and 4-7 (mins).
void pack_scales_mins(const uint8_t* sc, const uint8_t* m, std::byte* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<std::byte>(sc[j] | (sc[j + 4] >> 4) << 6);
    out[j + 4] = static_cast<std::byte>(m[j] | (m[j + 4] >> 4) << 6);
    out[j + 8] = static_cast<std::byte>((sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4);
  }
}

// One Q4_K / Q5_K super-block as codes (0..nmax per value), fp16 d / dmin and 6-bit levels: each sub-block
// fitted on its own, the fits stored relative to the largest scale and the largest minimum (so the
// largest maps to level 63), then the codes recomputed from the stored, rounded scale and minimum. A
// sub-block whose stored scale is 0 keeps its fitted codes.
void quantize_affine_superblock(const float* x, int nmax, ScaleCandidates candidates, std::byte* d_dmin,
                                std::byte* scales12, uint8_t* codes) {
  AffineFit fits[kAffineSubs];
  float max_scale = 0, max_min = 0;
  float w[kAffineSub];
  for (int j = 0; j < kAffineSubs; ++j) {
    affine_weights(x + kAffineSub * j, w);
    fits[j] = fit_affine(x + kAffineSub * j, w, nmax, candidates, codes + kAffineSub * j);
    max_scale = std::max(max_scale, fits[j].scale);
    max_min = std::max(max_min, fits[j].neg_min);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t sc[kAffineSubs], m[kAffineSubs];
  for (int j = 0; j < kAffineSubs; ++j) {
    sc[j] = six_bit_level(fits[j].scale, inv_scale);
    m[j] = six_bit_level(fits[j].neg_min, inv_min);
  }
  store_f16(max_scale / 63.0f, d_dmin);
  store_f16(max_min / 63.0f, d_dmin + 2);
  pack_scales_mins(sc, m, scales12);

  const float d = rounded_to_f16(max_scale / 63.0f), dmin = rounded_to_f16(max_min / 63.0f);
  for (int j = 0; j < kAffineSubs; ++j) {
    const float step = d * static_cast<float>(sc[j]);
    if (step == 0.0f) continue;
    const float offset = dmin * static_cast<float>(m[j]);
    for (int i = kAffineSub * j; i < kAffineSub * (j + 1); ++i)
      codes[i] = static_cast<uint8_t>(std::clamp(nearest_int((x[i] + offset) / step), 0, nmax));
  }
}

// The K types' 4-bit planes: each 32 bytes hold 64 values, 64 i + l in the low nibble of byte l and
// 64 i + 32 + l in the high one.
void pack_k_nibbles(const uint8_t* codes, std::byte* out) {
  for (int i = 0; i < kSuperBlock / 64; ++i)
    for (int l = 0; l < 32; ++l)
      out[32 * i + l] =
          static_cast<std::byte>((codes[64 * i + l] & 0x0F) | (codes[64 * i + 32 + l] & 0x0F) << 4);
}

// Q4_K: d, dmin, scales[12], nibbles[128].
void quantize_block_q4_k(const float* x, std::byte* block) {
  uint8_t codes[kSuperBlock];
  quantize_affine_superblock(x, 15, kQ4_KCandidates, block, block + 4, codes);
  pack_k_nibbles(codes, block + 16);
}

// Q5_K: d, dmin, scales[12], qh[32] (the 5th bit of value 64 i + l at bit 2 i of byte l, of 64 i + 32 + l
// at bit 2 i + 1), nibbles[128].
void quantize_block_q5_k(const float* x, std::byte* block) {
  uint8_t codes[kSuperBlock];
  quantize_affine_superblock(x, 31, kQ5_KCandidates, block, block + 4, codes);
  for (int l = 0; l < 32; ++l) {
    uint8_t qh = 0;
    for (int i = 0; i < kSuperBlock / 64; ++i)
      qh |= static_cast<uint8_t>((codes[64 * i + l] >> 4) << (2 * i) | (codes[64 * i + 32 + l] >> 4)
                                                                           << (2 * i + 1));
    block[16 + l] = static_cast<std::byte>(qh);
  }
  pack_k_nibbles(codes, block + 48);
}

// ---- K types: Q6_K (symmetric sub-blocks of 16)

constexpr int kSymmetricSub = 16;
constexpr int kSymmetricSubs = kSuperBlock / kSymmetricSub;
constexpr int kQ6Half = 32;  // codes -32..31, stored + 32

// Sums of the weighted least-squares scale for codes l: x ~= scale * l, scale = sum_lx / sum_l2, with
// weights x^2 (large values count most).
struct SymmetricSums {
  float sum_lx = 0, sum_l2 = 0;
};

int symmetric_code(float v, float iscale) {
  return std::clamp(nearest_int(iscale * v), -kQ6Half, kQ6Half - 1);
}

SymmetricSums symmetric_sums(const float* x, float iscale) {
  SymmetricSums s;
  for (int i = 0; i < kSymmetricSub; ++i) {
    const auto l = static_cast<float>(symmetric_code(x[i], iscale));
    const float w = x[i] * x[i];
    s.sum_lx += w * x[i] * l;
    s.sum_l2 += w * l * l;
  }
  return s;
}

void store_symmetric_codes(const float* x, float iscale, int8_t* codes) {
  for (int i = 0; i < kSymmetricSub; ++i)
    codes[i] = static_cast<int8_t>(symmetric_code(x[i], iscale) + kQ6Half);
}

// ggml's make_qx_quants (weights x^2): the scale that maps the largest-magnitude value, sign included,
// to code -32, refit by least squares, then 18 nearby scales ((32 +- 0.1 k) steps for that value), keeping
// the one whose codes explain most of the weighted energy (largest sum_lx^2 / sum_l2). Codes are stored
// as l + 32; returns the (signed) scale.
float fit_symmetric(const float* x, int8_t* codes) {
  float amax = 0, max = 0;
  for (int i = 0; i < kSymmetricSub; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax < 1e-15f) {  // all zero
    std::fill(codes, codes + kSymmetricSub, int8_t{0});
    return 0.0f;
  }
  float iscale = static_cast<float>(-kQ6Half) / max;
  store_symmetric_codes(x, iscale, codes);
  SymmetricSums s = symmetric_sums(x, iscale);
  float scale = s.sum_l2 != 0 ? s.sum_lx / s.sum_l2 : 0.0f;
  float best = scale * s.sum_lx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    iscale = -(static_cast<float>(kQ6Half) + 0.1f * static_cast<float>(k)) / max;
    s = symmetric_sums(x, iscale);
    if (s.sum_l2 > 0 && s.sum_lx * s.sum_lx > best * s.sum_l2) {
      store_symmetric_codes(x, iscale, codes);
      scale = s.sum_lx / s.sum_l2;
      best = scale * s.sum_lx;
    }
  }
  return scale;
}

// Q6_K: ql[128], qh[64], int8 scales[16], d. Per 128 values (h = 0, 1) and l < 32: ql[64 h + l] holds
// values l (low) and l + 64 (high), ql[64 h + 32 + l] values l + 32 and l + 96, qh[32 h + l] the top 2
// bits of l, l + 32, l + 64, l + 96 at shifts 0, 2, 4, 6.
void pack_q6_k(const int8_t* codes, std::byte* ql, std::byte* qh) {
  for (int h = 0; h < 2; ++h) {
    const auto* c = reinterpret_cast<const uint8_t*>(codes + 128 * h);
    for (int l = 0; l < 32; ++l) {
      ql[64 * h + l] = static_cast<std::byte>((c[l] & 0x0F) | (c[l + 64] & 0x0F) << 4);
      ql[64 * h + 32 + l] = static_cast<std::byte>((c[l + 32] & 0x0F) | (c[l + 96] & 0x0F) << 4);
      qh[32 * h + l] = static_cast<std::byte>((c[l] >> 4) | (c[l + 32] >> 4) << 2 | (c[l + 64] >> 4) << 4 |
                                              (c[l + 96] >> 4) << 6);
    }
  }
}

// Each sub-block fitted on its own; the scales stored as int8 multiples of d, the largest-magnitude one
// (sign included) at -128 so the whole int8 range is used; then the codes recomputed with the stored
// scales (a sub-block whose stored scale is 0 keeps its fitted codes).
void quantize_block_q6_k(const float* x, std::byte* block) {
  std::byte *ql = block, *qh = block + 128, *scales = block + 192, *d_field = block + 208;
  int8_t codes[kSuperBlock];
  float fitted[kSymmetricSubs];
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < kSymmetricSubs; ++j) {
    fitted[j] = fit_symmetric(x + kSymmetricSub * j, codes + kSymmetricSub * j);
    if (std::fabs(fitted[j]) > max_abs_scale) {
      max_abs_scale = std::fabs(fitted[j]);
      max_scale = fitted[j];
    }
  }
  if (max_abs_scale < 1e-15f) {  // an all-zero super-block: every field 0
    std::fill(block, block + kQ6_KBlockBytes, std::byte{0});
    return;
  }
  const float iscale = -128.0f / max_scale;
  store_f16(1 / iscale, d_field);
  const float d = rounded_to_f16(1 / iscale);
  for (int j = 0; j < kSymmetricSubs; ++j) {
    const auto level = static_cast<int8_t>(std::min(127, nearest_int(iscale * fitted[j])));
    scales[j] = static_cast<std::byte>(level);
    const float step = d * static_cast<float>(level);
    if (step == 0.0f) continue;
    for (int i = kSymmetricSub * j; i < kSymmetricSub * (j + 1); ++i)
      codes[i] = static_cast<int8_t>(std::clamp(nearest_int(x[i] / step), -kQ6Half, kQ6Half - 1) + kQ6Half);
  }
  pack_q6_k(codes, ql, qh);
}

using BlockQuantizer = void (*)(const float*, std::byte*);

void quantize_row(BlockQuantizer quantize_block, int64_t block_values, size_t block_bytes, const float* x,
                  int64_t n, std::byte* out) {
  for (int64_t b = 0; b < n / block_values; ++b) quantize_block(x + b * block_values, out + b * block_bytes);
}

}  // namespace

void quantize_row_q8_0(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q8_0, kQuantBlock, kQ8_0BlockBytes, x, n, out);
}

void quantize_row_q4_0(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q4_0, kQuantBlock, kQ4_0BlockBytes, x, n, out);
}

void quantize_row_q5_0(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q5_0, kQuantBlock, kQ5_0BlockBytes, x, n, out);
}

void quantize_row_q5_1(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q5_1, kQuantBlock, kQ5_1BlockBytes, x, n, out);
}

void quantize_row_q4_k(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q4_k, kSuperBlock, kQ4_KBlockBytes, x, n, out);
}

void quantize_row_q5_k(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q5_k, kSuperBlock, kQ5_KBlockBytes, x, n, out);
}

void quantize_row_q6_k(const float* x, int64_t n, std::byte* out) {
  quantize_row(quantize_block_q6_k, kSuperBlock, kQ6_KBlockBytes, x, n, out);
}

bool can_quantize(DType type) {
  switch (type) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

void quantize_blocks(DType type, const float* x, int64_t n, std::byte* out) {
  switch (type) {
    case DType::Q8_0:
      return quantize_row_q8_0(x, n, out);
    case DType::Q4_0:
      return quantize_row_q4_0(x, n, out);
    case DType::Q5_0:
      return quantize_row_q5_0(x, n, out);
    case DType::Q5_1:
      return quantize_row_q5_1(x, n, out);
    case DType::Q4_K:
      return quantize_row_q4_k(x, n, out);
    case DType::Q5_K:
      return quantize_row_q5_k(x, n, out);
    case DType::Q6_K:
      return quantize_row_q6_k(x, n, out);
    default:
      throw std::invalid_argument("quantize_blocks: no quantizer writes " +
                                  std::string(dtype_info(type).name));
  }
}

}  // namespace ge::kernels
