// JPEG through libjpeg-turbo with the settings Pillow uses (its defaults: islow DCT, fancy upsampling),
// so the pixels are Pillow's bit for bit when both link the same libjpeg-turbo.
// jpeglib.h needs FILE and size_t declared before it.
// clang-format off
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include <csetjmp>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/image_codecs.h"

namespace ge::formats::image_detail {
namespace {

// libjpeg reports errors through a callback that must not return: it longjmps. As for PNG, what is alive
// across libjpeg calls lives here, in decode_jpeg()'s frame, above the function that calls setjmp.
struct JpegRead {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr errors{};
  std::jmp_buf jump{};
  char message[JMSG_LENGTH_MAX] = "";
  bool created = false;
  RgbImage image;
  std::vector<uint8_t> row;

  ~JpegRead() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* r = static_cast<JpegRead*>(cinfo->client_data);
  cinfo->err->format_message(cinfo, r->message);
  std::longjmp(r->jump, 1);
}

// Pillow decodes past libjpeg's corrupt-data warnings, but a file that ends early is an error for it (its
// decoder asks for bytes that never come), whereas libjpeg would pad it with gray.
void on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) on_error(cinfo);
}

void on_output(j_common_ptr) {}  // a library prints nothing

// Pillow reads every 4-component JPEG as Adobe's inverted CMYK ("CMYK;I": C = 255 - stored), then turns
// CMYK into RGB as R = (255 - K) - C * (255 - K) / 255, the division rounded as its MULDIV255 does.
uint8_t inverted_cmyk_to_rgb(uint8_t stored_c, uint8_t stored_k) {
  const int c = 255 - stored_c, white = stored_k;  // white = 255 - K
  const int t = c * white + 128;
  return static_cast<uint8_t>(white - (((t >> 8) + t) >> 8));
}

void convert_row(const uint8_t* in, int components, int64_t width, uint8_t* out) {
  for (int64_t x = 0; x < width; ++x, out += 3) {
    if (components == 1) {
      out[0] = out[1] = out[2] = in[x];
    } else if (components == 3) {
      out[0] = in[3 * x], out[1] = in[3 * x + 1], out[2] = in[3 * x + 2];
    } else {
      const uint8_t* p = &in[4 * x];
      for (int c = 0; c < 3; ++c) out[c] = inverted_cmyk_to_rgb(p[c], p[3]);
    }
  }
}

// Returns false after a libjpeg error (message in r.message). Holds no object with a destructor.
bool read_jpeg(JpegRead& r, std::span<const uint8_t> bytes) {
  if (setjmp(r.jump)) return false;
  jpeg_create_decompress(&r.cinfo);  // keeps cinfo.err and cinfo.client_data
  r.created = true;
  jpeg_mem_src(&r.cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&r.cinfo, TRUE);
  switch (r.cinfo.num_components) {  // Pillow's modes: L, RGB, CMYK
    case 1:
      r.cinfo.out_color_space = JCS_GRAYSCALE;
      break;
    case 3:
      r.cinfo.out_color_space = JCS_RGB;
      break;
    case 4:
      r.cinfo.out_color_space = JCS_CMYK;
      break;  // libjpeg turns YCCK into CMYK
    default:
      throw std::runtime_error("JPEG: cannot handle " + std::to_string(r.cinfo.num_components) +
                               " components");
  }
  r.image = allocate_rgb(r.cinfo.image_width, r.cinfo.image_height, "JPEG");
  jpeg_start_decompress(&r.cinfo);
  const int components = r.cinfo.output_components;
  r.row.resize(static_cast<size_t>(r.cinfo.output_width) * components);
  while (r.cinfo.output_scanline < r.cinfo.output_height) {
    const int64_t y = r.cinfo.output_scanline;
    JSAMPROW row = r.row.data();
    jpeg_read_scanlines(&r.cinfo, &row, 1);
    convert_row(r.row.data(), components, r.image.width, &r.image.pixels[y * r.image.width * 3]);
  }
  return true;  // not jpeg_finish_decompress(): like Pillow, a file may lack what follows the last scan
}

}  // namespace

RgbImage decode_jpeg(std::span<const uint8_t> bytes) {
  JpegRead r;
  r.cinfo.err = jpeg_std_error(&r.errors);
  r.errors.error_exit = on_error;
  r.errors.emit_message = on_message;
  r.errors.output_message = on_output;
  r.cinfo.client_data = &r;
  if (!read_jpeg(r, bytes)) throw std::runtime_error(std::string("JPEG: ") + r.message);
  return std::move(r.image);
}

}  // namespace ge::formats::image_detail
