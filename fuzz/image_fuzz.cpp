// An image file from a stranger (PNG, JPEG, WebP, GIF, BMP: the magic bytes decide), decoded to RGB and
// preprocessed as Gemma3ImageProcessor does, with and without pan-and-scan; the first byte picks the resampling
// filter and the output size, the rest is the file.
#include <span>

#include "formats/image.h"
#include "runtime/image_processor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge;
  if (size == 0) return 0;
  const uint8_t pick = data[0];
  try {
    const formats::RgbImage image = formats::decode_image(std::span(data + 1, size - 1), "fuzz.img");
    // Every pixel is there: a decoder that claims more than it wrote would be read out of bounds below.
    if (image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) __builtin_trap();
    runtime::ImageProcessorConfig config;
    config.resample = pick % 6;
    config.height = config.width = 8 + (pick >> 3) % 8 * 4;
    config.pan_and_scan_min_crop_size = 4;
    (void)runtime::preprocess_image(image, config, /*pan_and_scan=*/pick & 0x80);
  } catch (const std::exception&) {
  }
  return 0;
}
