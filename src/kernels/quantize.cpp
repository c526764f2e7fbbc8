#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/dtype.h"

namespace ge::kernels {
namespace {

void store_scale(float d, std::byte* block) {
  const uint16_t h = f32_to_f16(d);
  std::memcpy(block, &h, 2);
}

// The codes use the f32 scale; only the stored one is rounded to fp16, as in ggml.
void quantize_block_q8_0(const float* x, std::byte* block) {
  float amax = 0.0f;
  for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_scale(d, block);
  for (int64_t j = 0; j < kQuantBlock; ++j)
    block[2 + j] = static_cast<std::byte>(static_cast<int8_t>(std::roundf(x[j] * id)));
}

// The scale maps the largest-magnitude value, sign included, to code 0 (= -8 * d): dividing by -8 rather
// than 8 spends the asymmetric end of [-8, 7] on that value. Ties on |x| keep the first, as ggml does.
void quantize_block_q4_0(const float* x, std::byte* block) {
  float amax = 0.0f, max = 0.0f;
  for (int64_t j = 0; j < kQuantBlock; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_scale(d, block);
  // As ggml: x * id + 8.5 truncated through int8_t rounds half up; a value of magnitude amax and the
  // opposite sign to max lands on 16.5, hence the cap at 15.
  const auto code = [&](float v) {
    return static_cast<uint8_t>(std::min(15, int{static_cast<int8_t>(v * id + 8.5f)}));
  };
  constexpr int64_t half = kQuantBlock / 2;
  for (int64_t j = 0; j < half; ++j)
    block[2 + j] = static_cast<std::byte>(code(x[j]) | (code(x[j + half]) << 4));
}

}  // namespace

void quantize_row_q8_0(const float* x, int64_t n, std::byte* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b)
    quantize_block_q8_0(x + b * kQuantBlock, out + b * kQ8_0BlockBytes);
}

void quantize_row_q4_0(const float* x, int64_t n, std::byte* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b)
    quantize_block_q4_0(x + b * kQuantBlock, out + b * kQ4_0BlockBytes);
}

}  // namespace ge::kernels
