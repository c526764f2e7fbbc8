// PNG through libpng, converted to RGB by Pillow's rules for each (colour type, bit depth).
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/image_codecs.h"

namespace ge::formats::image_detail {
namespace {

// libpng reports errors by longjmp. Everything that is alive across a libpng call lives here, in the frame
// of decode_png(), above the function that calls setjmp: a longjmp skips no destructor and leaves no
// local of that function indeterminate.
struct PngRead {
  std::span<const uint8_t> bytes;
  size_t offset = 0;
  png_structp png = nullptr;
  png_infop info = nullptr;
  char error[256] = "";
  int color_type = 0, bit_depth = 0;
  Palette palette;
  RgbImage image;
  std::vector<uint8_t> rows;  // decoded rows in the file's layout: one row, or all of them when interlaced

  explicit PngRead(std::span<const uint8_t> b) : bytes(b) {}
  ~PngRead() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

void on_error(png_structp png, png_const_charp message) {
  auto* r = static_cast<PngRead*>(png_get_error_ptr(png));
  std::snprintf(r->error, sizeof r->error, "%s", message);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // warnings are about ancillary chunks libpng skips

void on_read(png_structp png, png_bytep out, size_t n) {
  auto* r = static_cast<PngRead*>(png_get_io_ptr(png));
  if (r->bytes.size() - r->offset < n) png_error(png, "file is truncated");
  std::memcpy(out, r->bytes.data() + r->offset, n);
  r->offset += n;
}

// One row in the file's layout (after libpng expanded sub-byte samples to bytes) -> RGB, as Pillow's
// PNG modes convert: 16-bit samples keep their high byte, except 16-bit gray, Pillow's "I" mode, whose
// conversion to RGB clips the value to 255.
void convert_row(const PngRead& r, const uint8_t* in, uint8_t* out) {
  const int64_t width = r.image.width;
  const bool wide = r.bit_depth == 16;
  const int channels = png_get_channels(r.png, r.info);
  auto sample = [&](int64_t x, int c) {
    return in[(x * channels + c) << (wide ? 1 : 0)];
  };  // high byte first
  for (int64_t x = 0; x < width; ++x, out += 3) {
    switch (r.color_type) {
      case PNG_COLOR_TYPE_PALETTE:
        r.palette.put(in[x], out);
        break;
      case PNG_COLOR_TYPE_GRAY:
        if (wide) {
          const unsigned v = (in[2 * x] << 8) | in[2 * x + 1];
          out[0] = out[1] = out[2] = static_cast<uint8_t>(v > 255 ? 255 : v);
        } else {
          out[0] = out[1] = out[2] = in[x];
        }
        break;
      case PNG_COLOR_TYPE_GRAY_ALPHA:
        out[0] = out[1] = out[2] = sample(x, 0);
        break;
      default:  // RGB, RGB_ALPHA
        out[0] = sample(x, 0), out[1] = sample(x, 1), out[2] = sample(x, 2);
    }
  }
}

// Returns false after a libpng error (message in r.error). Holds no object with a destructor.
bool read_png(PngRead& r) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_set_read_fn(r.png, &r, on_read);
  png_read_info(r.png, r.info);
  r.color_type = png_get_color_type(r.png, r.info);
  r.bit_depth = png_get_bit_depth(r.png, r.info);
  if (r.bit_depth < 8) {
    // Gray is scaled (a 2-bit 3 becomes 255, as Pillow's "L;2"), palette indices are only unpacked.
    if (r.color_type == PNG_COLOR_TYPE_GRAY)
      png_set_expand_gray_1_2_4_to_8(r.png);
    else
      png_set_packing(r.png);
  }
  if (r.color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp entries = nullptr;
    int n = 0;
    png_get_PLTE(r.png, r.info, &entries, &n);
    r.palette = Palette({reinterpret_cast<const uint8_t*>(entries), static_cast<size_t>(n) * 3});
  }
  const int passes = png_set_interlace_handling(r.png);
  png_read_update_info(r.png, r.info);

  r.image = allocate_rgb(png_get_image_width(r.png, r.info), png_get_image_height(r.png, r.info), "PNG");
  const size_t row_bytes = png_get_rowbytes(r.png, r.info);
  const int64_t height = r.image.height;
  const bool interlaced = passes > 1;  // each Adam7 pass adds pixels to rows already read: keep them all
  r.rows.resize(row_bytes * (interlaced ? height : 1));
  for (int pass = 0; pass < passes; ++pass) {
    for (int64_t y = 0; y < height; ++y) {
      uint8_t* row = r.rows.data() + (interlaced ? y * row_bytes : 0);
      png_read_row(r.png, row, nullptr);
      if (!interlaced) convert_row(r, row, &r.image.pixels[y * r.image.width * 3]);
    }
  }
  if (interlaced)
    for (int64_t y = 0; y < height; ++y)
      convert_row(r, &r.rows[y * row_bytes], &r.image.pixels[y * r.image.width * 3]);
  return true;  // what follows the pixels (text, IEND) is not read: Pillow does not need it either
}

}  // namespace

RgbImage decode_png(std::span<const uint8_t> bytes) {
  PngRead r(bytes);
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_error, on_warning);
  if (r.png) r.info = png_create_info_struct(r.png);
  if (!r.png || !r.info) throw std::runtime_error("PNG: libpng could not start");
  if (!read_png(r)) throw std::runtime_error(std::string("PNG: ") + r.error);
  return std::move(r.image);
}

}  // namespace ge::formats::image_detail
