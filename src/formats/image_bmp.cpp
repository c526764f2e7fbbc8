// BMP, decoded as Pillow's BmpImagePlugin reads it (no library: Pillow's own rules are what must match,
// e.g. 5-bit channels scaled by v * 255 / 31, where stb_image replicates bits). Supported as Pillow:
// OS/2 and Windows v3-v5 headers, 1/4/8-bit palettes, 16-bit 555/565, 24-bit, 32-bit with the channel
// masks Pillow knows, RLE8 and RLE4 (with the delta and absolute-mode handling of current Pillow).
#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/image_codecs.h"

namespace ge::formats::image_detail {
namespace {

enum Compression : uint32_t { kRaw = 0, kRle8 = 1, kRle4 = 2, kBitfields = 3 };

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  uint32_t u16(size_t at) const {
    need(at, 2);
    return bytes_[at] | bytes_[at + 1] << 8;
  }
  uint32_t u32(size_t at) const {
    need(at, 4);
    return u16(at) | u16(at + 2) << 16;
  }
  uint8_t u8(size_t at) const {
    need(at, 1);
    return bytes_[at];
  }
  std::span<const uint8_t> from(size_t at) const {
    return at < bytes_.size() ? bytes_.subspan(at) : std::span<const uint8_t>{};
  }
  void need(size_t at, size_t n) const {
    if (at > bytes_.size() || bytes_.size() - at < n) throw std::runtime_error("BMP: file is truncated");
  }

 private:
  std::span<const uint8_t> bytes_;
};

struct Header {
  int64_t width = 0, height = 0;
  bool top_down = false;
  int bits = 0;
  uint32_t compression = kRaw;
  std::array<uint32_t, 4> masks{};  // r, g, b, a
  Palette palette;
  size_t pixels_at = 0;
};

void read_masks(const Reader& in, size_t at, int n, Header& h) {
  for (int i = 0; i < n; ++i) h.masks[i] = in.u32(at + 4 * i);
}

// The header, palette and where the pixels start, with Pillow's quirks: a flipped image is told by the
// top byte of the height; a pixel offset that points at the palette is moved past it.
Header read_header(const Reader& in) {
  Header h;
  const uint32_t header_size = in.u32(14);
  size_t next = 14 + size_t{header_size};  // what follows the header: masks, then palette
  uint32_t colors = 0;
  int palette_stride = 4;
  if (header_size == 12) {  // OS/2 1.x
    h.width = in.u16(18), h.height = in.u16(20), h.bits = in.u16(24);
    palette_stride = 3;
  } else if (header_size == 40 || header_size == 64 || header_size == 108 || header_size == 124) {
    in.need(14, header_size);
    h.top_down = in.u8(25) == 0xff;
    h.width = in.u32(18);
    h.height = h.top_down ? (int64_t{1} << 32) - in.u32(22) : in.u32(22);
    h.bits = in.u16(28);
    h.compression = in.u32(30);
    colors = in.u32(46);
    if (h.compression == kBitfields) {
      if (header_size >= 56) {
        read_masks(in, 54, 4, h);
      } else {  // a v3 header's three masks follow it
        read_masks(in, next, 3, h);
        next += 12;
      }
    }
  } else {
    throw std::runtime_error("BMP: unsupported header size " + std::to_string(header_size));
  }
  if (h.bits != 1 && h.bits != 4 && h.bits != 8 && h.bits != 16 && h.bits != 24 && h.bits != 32)
    throw std::runtime_error("BMP: unsupported pixel depth " + std::to_string(h.bits));
  if (h.compression != kRaw && h.compression != kBitfields &&
      !((h.compression == kRle8 || h.compression == kRle4) && h.bits <= 8))
    throw std::runtime_error("BMP: unsupported compression " + std::to_string(h.compression));
  if (h.compression == kBitfields && h.bits <= 8)
    throw std::runtime_error("BMP: unsupported bitfields layout");

  const uint64_t n_colors = colors ? colors : uint64_t{1} << h.bits;
  size_t offset = in.u32(10);
  if (h.bits <= 8) {
    if (n_colors > 256) throw std::runtime_error("BMP: palette of " + std::to_string(n_colors) + " colors");
    if (offset == 14 + size_t{header_size}) offset += 4 * n_colors;
    const auto stored =
        in.from(next).first(std::min<size_t>(in.from(next).size(), palette_stride * n_colors));
    h.palette = Palette(stored, palette_stride, /*bgr=*/true);
    next += palette_stride * n_colors;
  }
  h.pixels_at = offset ? offset : next;
  return h;
}

// Byte positions of R, G, B in a 32-bit pixel, for the mask sets Pillow accepts.
std::array<int, 3> rgb_bytes_32(const Header& h) {
  using M = std::array<uint32_t, 4>;
  static const M known[] = {{0xff0000, 0xff00, 0xff, 0},          {0xff000000, 0xff0000, 0xff00, 0},
                            {0xff000000, 0xff0000, 0xff00, 0xff}, {0xff, 0xff00, 0xff0000, 0xff000000},
                            {0xff0000, 0xff00, 0xff, 0xff000000}, {0, 0, 0, 0}};
  if (h.compression == kRaw || h.masks == M{}) return {2, 1, 0};
  if (std::find(std::begin(known), std::end(known), h.masks) == std::end(known))
    throw std::runtime_error("BMP: unsupported bitfields layout");
  return {std::countr_zero(h.masks[0]) / 8, std::countr_zero(h.masks[1]) / 8,
          std::countr_zero(h.masks[2]) / 8};
}

// 16-bit pixels: 5-5-5 unless the masks say 5-6-5. Pillow scales each channel as v * 255 / max.
bool is_565(const Header& h) {
  using M3 = std::array<uint32_t, 3>;
  const M3 rgb{h.masks[0], h.masks[1], h.masks[2]};
  if (h.compression == kRaw || rgb == M3{0x7c00, 0x3e0, 0x1f}) return false;
  if (rgb == M3{0xf800, 0x7e0, 0x1f}) return true;
  throw std::runtime_error("BMP: unsupported bitfields layout");
}

void check_24_bit_masks(const Header& h) {
  if (h.compression == kBitfields && !(h.masks[0] == 0xff0000 && h.masks[1] == 0xff00 && h.masks[2] == 0xff))
    throw std::runtime_error("BMP: unsupported bitfields layout");
}

// Uncompressed rows (each padded to 4 bytes) -> RGB.
void decode_raw(const Reader& in, const Header& h, RgbImage& image) {
  const size_t stride = ((static_cast<size_t>(image.width) * h.bits + 31) >> 3) & ~size_t{3};
  in.need(h.pixels_at, stride * image.height);
  const std::array<int, 3> at32 = h.bits == 32 ? rgb_bytes_32(h) : std::array<int, 3>{};
  const bool wide_green = h.bits == 16 && is_565(h);
  if (h.bits == 24) check_24_bit_masks(h);
  for (int64_t row = 0; row < image.height; ++row) {
    const uint8_t* p = in.from(h.pixels_at + row * stride).data();
    const int64_t y = h.top_down ? row : image.height - 1 - row;
    uint8_t* out = &image.pixels[y * image.width * 3];
    for (int64_t x = 0; x < image.width; ++x, out += 3) {
      switch (h.bits) {
        case 1:
          h.palette.put((p[x >> 3] >> (7 - (x & 7))) & 1, out);
          break;
        case 4:
          h.palette.put((p[x >> 1] >> ((x & 1) ? 0 : 4)) & 15, out);
          break;
        case 8:
          h.palette.put(p[x], out);
          break;
        case 16: {
          const unsigned v = p[2 * x] | p[2 * x + 1] << 8;
          out[2] = (v & 31) * 255 / 31;
          out[1] = wide_green ? ((v >> 5) & 63) * 255 / 63 : ((v >> 5) & 31) * 255 / 31;
          out[0] = ((v >> (wide_green ? 11 : 10)) & 31) * 255 / 31;
          break;
        }
        case 24:
          out[0] = p[3 * x + 2], out[1] = p[3 * x + 1], out[2] = p[3 * x];
          break;
        default:
          for (int c = 0; c < 3; ++c) out[c] = p[4 * x + at32[c]];
      }
    }
  }
}

// RLE8/RLE4 -> palette indices, bottom row first, as Pillow's BmpRleDecoder fills them: runs are cut at
// the row's end, end-of-line pads the row with index 0, delta skips with index 0, absolute runs realign
// to an even file offset.
std::vector<uint8_t> rle_indices(const Reader& in, const Header& h, int64_t width, int64_t height) {
  const size_t total = static_cast<size_t>(width * height);
  const bool rle4 = h.compression == kRle4;
  std::vector<uint8_t> data;
  data.reserve(total);
  const auto bytes = in.from(0);
  size_t pos = h.pixels_at;
  int64_t x = 0;
  while (data.size() < total && pos + 2 <= bytes.size()) {
    const uint8_t count = bytes[pos], value = bytes[pos + 1];
    pos += 2;
    if (count) {  // a run of one index (RLE4: two alternating indices)
      const int64_t n = std::max<int64_t>(0, std::min<int64_t>(count, width - x));
      for (int64_t i = 0; i < n; ++i) data.push_back(rle4 ? (i % 2 ? value & 15 : value >> 4) : value);
      x += n;
    } else if (value == 0) {  // end of line
      while (data.size() % width) data.push_back(0);
      x = 0;
    } else if (value == 1) {  // end of bitmap
      break;
    } else if (value == 2) {  // delta: right, up
      if (pos + 2 > bytes.size()) break;
      data.insert(data.end(), bytes[pos] + size_t{bytes[pos + 1]} * width, 0);
      pos += 2;
      x = static_cast<int64_t>(data.size() % width);
    } else {  // absolute: `value` literal indices
      const size_t n = std::min<size_t>(total - std::min(total, data.size()), value);
      const size_t n_bytes = rle4 ? (n + 1) / 2 : n;
      const size_t got = std::min(n_bytes, bytes.size() - pos);
      for (size_t i = 0; i < got; ++i) {
        const uint8_t b = bytes[pos + i];
        if (!rle4) {
          data.push_back(b);
          continue;
        }
        data.push_back(b >> 4);
        if (i * 2 + 1 < n) data.push_back(b & 15);
      }
      pos += got;
      if (got < n_bytes || data.size() == total) break;
      x += value;
      pos += pos % 2;
    }
    if (data.size() > total) data.resize(total);  // a delta may run past the end
  }
  if (data.size() < total) throw std::runtime_error("BMP: not enough image data");
  return data;
}

void decode_rle(const Reader& in, const Header& h, RgbImage& image) {
  const auto indices = rle_indices(in, h, image.width, image.height);
  for (int64_t row = 0; row < image.height; ++row) {
    const int64_t y = h.top_down ? row : image.height - 1 - row;
    for (int64_t x = 0; x < image.width; ++x)
      h.palette.put(indices[row * image.width + x], &image.pixels[(y * image.width + x) * 3]);
  }
}

}  // namespace

RgbImage decode_bmp(std::span<const uint8_t> bytes) {
  const Reader in(bytes);
  const Header h = read_header(in);
  RgbImage image = allocate_rgb(h.width, h.height, "BMP");
  if (h.compression == kRle8 || h.compression == kRle4)
    decode_rle(in, h, image);
  else
    decode_raw(in, h, image);
  return image;
}

}  // namespace ge::formats::image_detail
