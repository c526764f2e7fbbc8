// Scalar conversions between f32 and the 16-bit float formats.
#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <cstring>

namespace ge {
namespace {

// Every one of the 65536 fp16 values widens to what the compiler's _Float16 conversion gives: zeros,
// subnormals, normals, infinities, NaN payloads.
TEST(Dtype, F16ToF32MatchesTheCompilersConversionForEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    _Float16 v;
    std::memcpy(&v, &bits, 2);
    const float expected = static_cast<float>(v), got = f16_to_f32(bits);
    uint32_t e, g;
    std::memcpy(&e, &expected, 4);
    std::memcpy(&g, &got, 4);
    if (expected != expected)  // NaN: same payload bits, quiet bit set by the conversion either way
      ASSERT_TRUE(got != got) << std::hex << h;
    else
      ASSERT_EQ(g, e) << std::hex << h;
  }
}

TEST(Dtype, F32ToF16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);  // halfway: to even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds past the largest finite value
}

}  // namespace
}  // namespace ge
