// Image files (PNG, JPEG, WebP, GIF, BMP) -> RGB8, pixel for pixel what the Hugging Face processors see:
// Pillow's Image.open(f).convert("RGB"). Pillow decodes JPEG with libjpeg-turbo and WebP with libwebp, as
// we do; PNG, GIF and BMP it decodes itself, so their conversions to RGB follow its rules, not libpng's.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace ge::formats {

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3], row-major
};

// Larger images are refused from their header, before any pixel buffer is allocated.
inline constexpr int64_t kMaxImagePixels = 100'000'000;

// The format is told by the magic bytes, never by the extension. Conversions, as Pillow's convert("RGB"):
//   - alpha (RGBA, LA, WebP alpha) is dropped, never composited;
//   - palette indices map to the palette; indices past its end map to gray (i, i, i), Pillow's fill;
//   - gray is replicated; 1/2/4-bit gray is scaled to 0..255;
//   - 16-bit PNG keeps the high byte, except 16-bit gray without alpha, which Pillow reads as a 32-bit
//     integer image and clips to 255 (so most 16-bit gray PNGs come out nearly white: that is Pillow);
//   - CMYK JPEG is read with Adobe's inverted polarity (Pillow assumes it for every CMYK JPEG), then
//     R = (255 - K) - C * (255 - K) / 255 in Pillow's integer rounding (likewise G from M, B from Y);
//   - GIF: the first frame on its logical screen, outside pixels at index 0 (or the frame's transparent
//     index); WebP: the first frame as libwebp's animation decoder composes it.
// EXIF orientation is not applied (Image.open does not; transformers' load_image() of a path or URL does).
// Throws std::runtime_error "NAME: FORMAT: what is wrong" for unknown formats, corrupt or truncated data,
// empty (0-pixel) images and images over kMaxImagePixels.
RgbImage decode_image(const std::filesystem::path& path);
RgbImage decode_image(std::span<const uint8_t> bytes, const std::string& name);

}  // namespace ge::formats
