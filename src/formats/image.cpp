#include "formats/image.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include "formats/image_codecs.h"
#include "formats/mapped_file.h"

namespace ge::formats {
namespace image_detail {

RgbImage allocate_rgb(int64_t width, int64_t height, const char* format) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width <= 0 || height <= 0)
    throw std::runtime_error(std::string(format) + ": empty image (" + size + ")");
  // Each side is checked first, so that the product cannot overflow.
  if (width > kMaxImagePixels || height > kMaxImagePixels || width * height > kMaxImagePixels)
    throw std::runtime_error(std::string(format) + ": image too large (" + size + " pixels; at most " +
                             std::to_string(kMaxImagePixels) + " pixels are accepted)");
  RgbImage image{width, height, {}};
  image.pixels.resize(static_cast<size_t>(width * height * 3));
  return image;
}

Palette::Palette() {
  for (int i = 0; i < 256; ++i) rgb_[i * 3] = rgb_[i * 3 + 1] = rgb_[i * 3 + 2] = static_cast<uint8_t>(i);
}

Palette::Palette(std::span<const uint8_t> entries, int stride, bool bgr) : Palette() {
  const size_t n = std::min<size_t>(256, entries.size() / stride);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* e = &entries[i * stride];
    rgb_[i * 3] = bgr ? e[2] : e[0];
    rgb_[i * 3 + 1] = e[1];
    rgb_[i * 3 + 2] = bgr ? e[0] : e[2];
  }
}

}  // namespace image_detail

namespace {

bool starts_with(std::span<const uint8_t> bytes, std::string_view magic, size_t at = 0) {
  return bytes.size() >= at + magic.size() && std::memcmp(bytes.data() + at, magic.data(), magic.size()) == 0;
}

// The magic numbers Pillow's plugins accept.
RgbImage decode_by_magic(std::span<const uint8_t> bytes) {
  using namespace image_detail;
  if (bytes.empty()) throw std::runtime_error("empty file");
  if (starts_with(bytes, "\x89PNG\r\n\x1a\n")) return decode_png(bytes);
  if (starts_with(bytes, "\xff\xd8\xff")) return decode_jpeg(bytes);
  if (starts_with(bytes, "RIFF") && starts_with(bytes, "WEBP", 8)) return decode_webp(bytes);
  if (starts_with(bytes, "GIF87a") || starts_with(bytes, "GIF89a")) return decode_gif(bytes);
  if (starts_with(bytes, "BM")) return decode_bmp(bytes);
  throw std::runtime_error("not a PNG, JPEG, WebP, GIF or BMP image");
}

}  // namespace

RgbImage decode_image(std::span<const uint8_t> bytes, const std::string& name) {
  try {
    return decode_by_magic(bytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(name + ": " + e.what());
  }
}

RgbImage decode_image(const std::filesystem::path& path) {
  const MappedFile file(path);
  const auto bytes = file.bytes();
  return decode_image({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, path.string());
}

}  // namespace ge::formats
