// GIF's first frame through giflib, placed as Pillow places it: on the logical screen (grown to hold the
// frame if needed), the rest of the screen at palette index 0, or at the frame's transparent index.
#include <gif_lib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/image_codecs.h"

namespace ge::formats::image_detail {
namespace {

struct GifSource {
  std::span<const uint8_t> bytes;
  size_t offset = 0;
};

int read_source(GifFileType* gif, GifByteType* out, int n) {
  auto* s = static_cast<GifSource*>(gif->UserData);
  const size_t count = std::min(static_cast<size_t>(n), s->bytes.size() - s->offset);
  std::memcpy(out, s->bytes.data() + s->offset, count);
  s->offset += count;
  return static_cast<int>(count);
}

void close_gif(GifFileType* gif) {
  int error = 0;
  DGifCloseFile(gif, &error);
}
using GifFile = std::unique_ptr<GifFileType, decltype(&close_gif)>;

[[noreturn]] void fail(int error) {
  const char* what = GifErrorString(error);
  throw std::runtime_error(std::string("GIF: ") + (what ? what : "error " + std::to_string(error)));
}

void check(const GifFile& gif, int status) {
  if (status == GIF_ERROR) fail(gif->Error);
}

// The transparent index of a graphic control extension (or -1), and skips every other extension.
int read_extension(const GifFile& gif, int transparent) {
  int code = 0;
  GifByteType* block = nullptr;  // block[0] is the block's length
  check(gif, DGifGetExtension(gif.get(), &code, &block));
  if (code == GRAPHICS_EXT_FUNC_CODE && block && block[0] >= 4 && (block[1] & 1)) transparent = block[4];
  while (block) check(gif, DGifGetExtensionNext(gif.get(), &block));
  return transparent;
}

// Rows in the order an interlaced frame stores them: every 8th from 0, every 8th from 4, every 4th from
// 2, every 2nd from 1.
std::vector<int64_t> row_order(int64_t height, bool interlaced) {
  std::vector<int64_t> rows;
  rows.reserve(height);
  if (!interlaced) {
    for (int64_t y = 0; y < height; ++y) rows.push_back(y);
    return rows;
  }
  for (auto [start, step] : {std::pair{0, 8}, {4, 8}, {2, 4}, {1, 2}})
    for (int64_t y = start; y < height; y += step) rows.push_back(y);
  return rows;
}

Palette frame_palette(const GifFile& gif) {
  const ColorMapObject* map = gif->Image.ColorMap ? gif->Image.ColorMap : gif->SColorMap;
  if (!map) return Palette();  // Pillow reads a GIF without any palette as gray ("L")
  static_assert(sizeof(GifColorType) == 3);
  return Palette({reinterpret_cast<const uint8_t*>(map->Colors), static_cast<size_t>(map->ColorCount) * 3});
}

RgbImage read_first_frame(const GifFile& gif, int transparent) {
  const GifImageDesc& d = gif->Image;
  if (d.Left < 0 || d.Top < 0 || d.Width < 0 || d.Height < 0)
    throw std::runtime_error("GIF: bad frame extent");
  RgbImage image = allocate_rgb(std::max<int64_t>(gif->SWidth, int64_t{d.Left} + d.Width),
                                std::max<int64_t>(gif->SHeight, int64_t{d.Top} + d.Height), "GIF");
  const Palette palette = frame_palette(gif);
  uint8_t background[3];
  palette.put(transparent >= 0 ? transparent : 0, background);
  for (int64_t i = 0; i < image.width * image.height; ++i) std::memcpy(&image.pixels[i * 3], background, 3);

  std::vector<GifPixelType> line(d.Width);
  for (int64_t y : row_order(d.Height, d.Interlace)) {
    check(gif, DGifGetLine(gif.get(), line.data(), d.Width));
    uint8_t* out = &image.pixels[((d.Top + y) * image.width + d.Left) * 3];
    for (int x = 0; x < d.Width; ++x) palette.put(line[x], out + 3 * x);
  }
  return image;
}

}  // namespace

RgbImage decode_gif(std::span<const uint8_t> bytes) {
  GifSource source{bytes};
  int error = 0;
  GifFile gif(DGifOpen(&source, read_source, &error), close_gif);
  if (!gif) fail(error);
  int transparent = -1;
  for (;;) {
    GifRecordType type;
    check(gif, DGifGetRecordType(gif.get(), &type));
    if (type == EXTENSION_RECORD_TYPE) {
      transparent = read_extension(gif, transparent);
    } else if (type == IMAGE_DESC_RECORD_TYPE) {
      check(gif, DGifGetImageDesc(gif.get()));
      return read_first_frame(gif, transparent);
    } else if (type == TERMINATE_RECORD_TYPE) {
      throw std::runtime_error("GIF: no image in the file");
    }
  }
}

}  // namespace ge::formats::image_detail
