// WebP through libwebp's animation decoder, the API Pillow reads every WebP file with (still or not).
#include <webp/decode.h>
#include <webp/demux.h>

#include <memory>
#include <stdexcept>

#include "formats/image_codecs.h"

namespace ge::formats::image_detail {

RgbImage decode_webp(std::span<const uint8_t> bytes) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(bytes.data(), bytes.size(), &features) != VP8_STATUS_OK)
    throw std::runtime_error("WebP: invalid or truncated header");
  // The decoder allocates its canvas when created, so the canvas size (what WebPGetFeatures reports for
  // an extended file) is checked first.
  RgbImage image = allocate_rgb(features.width, features.height, "WebP");

  const WebPData data{bytes.data(), bytes.size()};
  const std::unique_ptr<WebPAnimDecoder, decltype(&WebPAnimDecoderDelete)> decoder(
      WebPAnimDecoderNew(&data, nullptr), WebPAnimDecoderDelete);  // default options: RGBA, as Pillow asks
  if (!decoder) throw std::runtime_error("WebP: corrupt or truncated file");
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(decoder.get(), &info) ||
      info.canvas_width != static_cast<uint32_t>(image.width) ||
      info.canvas_height != static_cast<uint32_t>(image.height))
    throw std::runtime_error("WebP: canvas size disagrees with the header");
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(decoder.get(), &rgba, &timestamp))
    throw std::runtime_error("WebP: cannot decode the first frame");

  const int64_t n = image.width * image.height;
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) image.pixels[i * 3 + c] = rgba[i * 4 + c];  // alpha dropped, not composited
  return image;
}

}  // namespace ge::formats::image_detail
