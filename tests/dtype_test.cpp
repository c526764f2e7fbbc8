// Scalar conversions between f32 and the 16-bit float formats.
#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "tensor/tensor.h"

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

// What a hostile shape can ask: byte counts that overflow 64 bits are refused, not wrapped to a small number that
// a short data range could then match; a tensor with no rows has rows of 0 bytes (not a division by zero).
TEST(Dtype, ByteCountsThatOverflowAreRefusedAndEmptyTensorsHaveEmptyRows) {
  EXPECT_EQ(dtype_bytes(DType::F32, int64_t{1} << 61), std::optional<size_t>(size_t{1} << 63));
  EXPECT_EQ(dtype_bytes(DType::F32, int64_t{1} << 62), std::nullopt);
  const Tensor empty{"t", DType::BF16, {0, 64}, nullptr, 0};
  EXPECT_EQ(empty.row_bytes(), 0u);
}

// NaN and infinities of each float format are found at their index; finite extremes are not.
TEST(Dtype, FirstNonFiniteFindsNanAndInfinityInEachFloatFormat) {
  const float f32[] = {1.0f, 3.4e38f, -0.0f, std::numeric_limits<float>::infinity()};
  EXPECT_EQ(first_non_finite(DType::F32, reinterpret_cast<const std::byte*>(f32), 4), std::optional<size_t>(3));
  EXPECT_EQ(first_non_finite(DType::F32, reinterpret_cast<const std::byte*>(f32), 3), std::nullopt);
  const uint16_t bf16[] = {0x7f7f, 0xff7f, 0xffc1};  // max, -max, a NaN
  EXPECT_EQ(first_non_finite(DType::BF16, reinterpret_cast<const std::byte*>(bf16), 3), std::optional<size_t>(2));
  const uint16_t f16[] = {0x7bff, 0xfc00};  // 65504, -inf
  EXPECT_EQ(first_non_finite(DType::F16, reinterpret_cast<const std::byte*>(f16), 2), std::optional<size_t>(1));
  EXPECT_EQ(first_non_finite(DType::Q8_0, reinterpret_cast<const std::byte*>(f16), 2), std::nullopt);
}

}  // namespace
}  // namespace ge
