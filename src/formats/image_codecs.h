// Internal to formats/image*.cpp: one decoder per format, and what they share. A decoder throws
// std::runtime_error "FORMAT: what is wrong"; decode_image() puts the file's name in front.
#pragma once
#include <array>
#include <cstdint>
#include <span>

#include "formats/image.h"

namespace ge::formats::image_detail {

RgbImage decode_png(std::span<const uint8_t> bytes);
RgbImage decode_jpeg(std::span<const uint8_t> bytes);
RgbImage decode_webp(std::span<const uint8_t> bytes);
RgbImage decode_gif(std::span<const uint8_t> bytes);
RgbImage decode_bmp(std::span<const uint8_t> bytes);

// Checks the size a header declares (non-empty, at most kMaxImagePixels) and only then allocates.
RgbImage allocate_rgb(int64_t width, int64_t height, const char* format);

// A palette as Pillow holds one: 256 entries, those the file does not give left at Pillow's gray ramp.
class Palette {
 public:
  // `entries`: the file's colours, `stride` bytes apart, R, G, B (or B, G, R: BMP, which pads them to 4).
  Palette(std::span<const uint8_t> entries, int stride = 3, bool bgr = false);
  Palette();  // no palette at all: index i is gray (i, i, i), as Pillow's "L" mode reads it
  void put(uint8_t index, uint8_t* rgb_out) const {
    rgb_out[0] = rgb_[index * 3];
    rgb_out[1] = rgb_[index * 3 + 1];
    rgb_out[2] = rgb_[index * 3 + 2];
  }

 private:
  std::array<uint8_t, 256 * 3> rgb_;
};

}  // namespace ge::formats::image_detail
