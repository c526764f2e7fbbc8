// Image decoding and Gemma 3's image preprocessing against Pillow and transformers, byte for byte.
// tests/data/images/generate.py wrote the expected data with Debian's python3-pil (Pillow 9.4, the same
// libjpeg-turbo and libwebp as ours): decode/NAME.rgb is Image.open(NAME).convert("RGB"),
// resize/*.rgb is Image.resize of resize/src.*, processor_*/pixel_values.f32 is transformers' formula.
#include "formats/image.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/image_processor.h"
#include "test_util.h"

namespace ge {
namespace {

using formats::RgbImage;
namespace fs = std::filesystem;

fs::path images_dir() {
  return test::data_dir() / "images";
}

std::vector<uint8_t> read_u8(const fs::path& p) {
  const auto bytes = test::read_bytes(p);
  return {bytes.begin(), bytes.end()};
}

// Passes when `got` is `expected` exactly; otherwise says how many bytes differ and by how much at most.
::testing::AssertionResult same_pixels(const std::vector<uint8_t>& got,
                                       const std::vector<uint8_t>& expected) {
  if (got.size() != expected.size())
    return ::testing::AssertionFailure() << got.size() << " bytes, expected " << expected.size();
  size_t differ = 0;
  int worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int d = std::abs(int{got[i]} - int{expected[i]});
    differ += d != 0;
    worst = std::max(worst, d);
  }
  if (differ == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << differ << " of " << got.size() << " bytes differ, by up to " << worst;
}

// Runs f and returns the std::runtime_error message it throws ("" if it throws none).
template <typename F>
std::string runtime_error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// ---- decoding: every format and layout against Pillow ----

struct DecodeCase {
  const char* file;
  int64_t width, height;
};

class ImageDecodeTest : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(ImageDecodeTest, MatchesPillowConvertRgb) {
  const DecodeCase& c = GetParam();
  const fs::path file = images_dir() / "decode" / c.file;
  const RgbImage image = formats::decode_image(file);
  EXPECT_EQ(image.width, c.width);
  EXPECT_EQ(image.height, c.height);
  fs::path expected = file;
  expected.replace_extension(".rgb");
  EXPECT_TRUE(same_pixels(image.pixels, read_u8(expected)));
}

const DecodeCase kDecodeCases[] = {
    {"png_rgb.png", 37, 23},
    {"png_rgba.png", 37, 23},
    {"png_palette.png", 37, 23},
    {"png_palette_short.png", 37, 23},
    {"png_gray.png", 37, 23},
    {"png_gray2.png", 37, 23},
    {"png_1bit.png", 37, 23},
    {"png_la.png", 37, 23},
    {"png_rgb16.png", 37, 23},
    {"png_rgba16.png", 37, 23},
    {"png_gray16.png", 37, 23},
    {"png_la16.png", 37, 23},
    {"png_interlaced.png", 37, 23},
    {"png_interlaced16.png", 37, 23},
    {"jpeg_baseline.jpg", 37, 23},
    {"jpeg_444.jpg", 37, 23},
    {"jpeg_progressive.jpg", 37, 23},
    {"jpeg_gray.jpg", 37, 23},
    {"jpeg_cmyk.jpg", 37, 23},
    {"jpeg_cmyk_k.jpg", 37, 23},
    {"webp_lossy.webp", 37, 23},
    {"webp_lossless.webp", 37, 23},
    {"webp_alpha.webp", 37, 23},
    {"webp_animated.webp", 37, 23},
    {"gif.gif", 37, 23},
    {"gif_plain.gif", 37, 23},
    {"gif_animated.gif", 37, 23},
    {"gif_offset.gif", 37, 23},
    {"gif_grown.gif", 26, 14},
    {"bmp_24.bmp", 37, 23},
    {"bmp_8.bmp", 37, 23},
    {"bmp_4.bmp", 37, 23},
    {"bmp_1.bmp", 37, 23},
    {"bmp_32.bmp", 37, 23},
    {"bmp_565.bmp", 37, 23},
    {"bmp_555.bmp", 37, 23},
    {"bmp_topdown.bmp", 37, 23},
    {"bmp_v4_rgba.bmp", 37, 23},
    {"bmp_os2.bmp", 37, 23},
    {"bmp_rle8.bmp", 37, 23},
    {"bmp_rle4.bmp", 37, 23},
};

INSTANTIATE_TEST_SUITE_P(Image, ImageDecodeTest, ::testing::ValuesIn(kDecodeCases), [](const auto& info) {
  std::string name = info.param.file;
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
});

TEST(ImageDecode, FormatComesFromTheBytesNotTheName) {
  const auto png = read_u8(images_dir() / "decode" / "png_rgb.png");
  const RgbImage image = formats::decode_image(png, "photo.jpg");
  EXPECT_TRUE(same_pixels(image.pixels, read_u8(images_dir() / "decode" / "png_rgb.rgb")));
}

TEST(ImageDecode, SixteenBitGrayIsClippedAsPillowDoes) {
  // Written as 1.5 * (x + 37 y): Pillow's "I" mode clips the value to 255 when converting to RGB.
  const RgbImage image = formats::decode_image(images_dir() / "decode" / "png_gray16.png");
  EXPECT_EQ(image.pixels[(0 * 37 + 10) * 3], 15);
  EXPECT_EQ(image.pixels[(4 * 37 + 0) * 3], 222);
  EXPECT_EQ(image.pixels[(5 * 37 + 0) * 3], 255);  // 277
}

TEST(ImageDecode, PaletteIndicesPastThePaletteAreGray) {
  // 3 palette entries, 2-bit indices: index 3 shows Pillow's gray-ramp fill, (3, 3, 3).
  const RgbImage image = formats::decode_image(images_dir() / "decode" / "png_palette_short.png");
  int gray3 = 0;
  for (int64_t i = 0; i < image.width * image.height; ++i)
    gray3 += image.pixels[i * 3] == 3 && image.pixels[i * 3 + 1] == 3 && image.pixels[i * 3 + 2] == 3;
  EXPECT_GT(gray3, 0);
}

// ---- decoding: bad input is an error naming the file, never a crash ----

void expect_error_naming(const std::vector<uint8_t>& bytes, const std::string& name,
                         const std::string& what) {
  const std::string message = runtime_error_of([&] { formats::decode_image(bytes, name); });
  EXPECT_NE(message.find(name), std::string::npos) << "message: " << message;
  EXPECT_NE(message.find(what), std::string::npos) << "message: " << message;
}

TEST(ImageDecode, TruncatedFilesFail) {
  for (const char* file :
       {"png_rgb.png", "png_interlaced.png", "jpeg_baseline.jpg", "jpeg_progressive.jpg", "webp_lossy.webp",
        "webp_lossless.webp", "gif.gif", "bmp_24.bmp", "bmp_rle8.bmp"}) {
    SCOPED_TRACE(file);
    auto bytes = read_u8(images_dir() / "decode" / file);
    bytes.resize(bytes.size() / 2);
    expect_error_naming(bytes, std::string("half-") + file, "");
  }
}

TEST(ImageDecode, EmptyAndUnknownFilesFail) {
  expect_error_naming({}, "empty.png", "empty file");
  std::mt19937 rng(7);
  std::vector<uint8_t> noise(1000);
  for (auto& b : noise) b = static_cast<uint8_t>(rng());
  noise[0] = 'x';
  expect_error_naming(noise, "noise.bin", "not a PNG, JPEG, WebP, GIF or BMP image");
  test::ScratchDir dir;
  EXPECT_NE(runtime_error_of([&] { formats::decode_image(dir.path() / "missing.png"); }).find("missing.png"),
            std::string::npos);
  test::write_bytes(dir.path() / "zero.png", {});
  EXPECT_NE(
      runtime_error_of([&] { formats::decode_image(dir.path() / "zero.png"); }).find("zero.png: empty file"),
      std::string::npos);
}

uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffff;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320 & (0u - (c & 1)));
  }
  return ~c;
}

void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

// A valid PNG whose IHDR (with its CRC recomputed) claims width x height.
std::vector<uint8_t> png_claiming(uint32_t width, uint32_t height) {
  auto png = read_u8(images_dir() / "decode" / "png_rgb.png");
  put_be32(&png[16], width);
  put_be32(&png[20], height);
  put_be32(&png[29], crc32(&png[12], 17));  // over "IHDR" and its 13 bytes
  return png;
}

TEST(ImageDecode, HugeImagesAreRefusedFromTheirHeader) {
  const auto start = std::chrono::steady_clock::now();
  expect_error_naming(png_claiming(20000, 20000), "huge.png", "too large (20000x20000");

  auto jpeg = read_u8(images_dir() / "decode" / "jpeg_baseline.jpg");  // SOF0: FFC0, length, precision, h, w
  for (size_t i = 2; i + 9 < jpeg.size(); ++i)
    if (jpeg[i] == 0xff && jpeg[i + 1] == 0xc0) {
      jpeg[i + 5] = jpeg[i + 6] = jpeg[i + 7] = jpeg[i + 8] = 0xea;  // 60138 x 60138
      break;
    }
  expect_error_naming(jpeg, "huge.jpg", "too large (60138x60138");

  auto webp =
      read_u8(images_dir() / "decode" / "webp_animated.webp");  // VP8X: 24-bit canvas width-1, height-1
  ASSERT_EQ(std::memcmp(&webp[12], "VP8X", 4), 0);
  for (int i = 24; i < 30; ++i) webp[i] = i % 3 == 2 ? 0x00 : 0x3f;  // 16192 x 16192
  expect_error_naming(webp, "huge.webp", "too large (16192x16192");

  auto gif = read_u8(images_dir() / "decode" / "gif.gif");
  gif[6] = gif[7] = gif[8] = gif[9] = 0xff;  // logical screen 65535 x 65535
  expect_error_naming(gif, "huge.gif", "too large (65535x65535");

  auto bmp = read_u8(images_dir() / "decode" / "bmp_24.bmp");
  bmp[21] = 0x10, bmp[25] = 0x10;  // width and height 0x10000025 and 0x10000017
  expect_error_naming(bmp, "huge.bmp", "too large");

  // Nothing was allocated for the pixels: refusing all five took no time.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

// Where the first image descriptor (",", left, top, width, height) starts: after the screen descriptor,
// the global palette and the extensions' sub-blocks.
size_t gif_frame_at(const std::vector<uint8_t>& gif) {
  size_t pos = 13 + ((gif[10] & 0x80) ? 3u << ((gif[10] & 7) + 1) : 0);
  while (gif[pos] == 0x21) {
    pos += 2;
    while (gif[pos]) pos += gif[pos] + 1;
    ++pos;
  }
  EXPECT_EQ(gif[pos], 0x2c);
  return pos;
}

TEST(ImageDecode, ZeroPixelImagesFail) {
  expect_error_naming(png_claiming(0, 23), "zero.png", "");
  auto bmp = read_u8(images_dir() / "decode" / "bmp_24.bmp");
  bmp[18] = 0;  // width 37 -> 0
  expect_error_naming(bmp, "zero.bmp", "empty image (0x23)");
  auto gif = read_u8(images_dir() / "decode" / "gif.gif");
  std::fill(gif.begin() + 6, gif.begin() + 10, 0);  // logical screen 0 x 0
  std::fill(gif.begin() + gif_frame_at(gif) + 5, gif.begin() + gif_frame_at(gif) + 9, 0);  // frame 0 x 0
  expect_error_naming(gif, "zero.gif", "empty image (0x0)");
}

// Cut at many lengths and with bytes overwritten, every file either decodes or throws runtime_error.
TEST(ImageDecode, DamagedFilesNeverCrash) {
  std::mt19937 rng(1234);
  for (const auto& c : kDecodeCases) {
    SCOPED_TRACE(c.file);
    const auto good = read_u8(images_dir() / "decode" / c.file);
    for (size_t n = 0; n < good.size(); n += 1 + good.size() / 40) {
      const std::vector<uint8_t> cut(good.begin(), good.begin() + n);
      try {
        formats::decode_image(cut, "cut");
      } catch (const std::runtime_error&) {
      }
    }
    for (int trial = 0; trial < 40; ++trial) {
      auto bad = good;
      for (int k = 0; k < 4; ++k) bad[8 + rng() % (bad.size() - 8)] = static_cast<uint8_t>(rng());
      try {
        const RgbImage image = formats::decode_image(bad, "damaged");
        EXPECT_EQ(image.pixels.size(), static_cast<size_t>(image.width * image.height * 3));
      } catch (const std::runtime_error&) {
      }
    }
  }
}

// ---- resizing: Pillow's Image.resize, bit for bit ----

struct ResizeCase {
  const char* source;
  int64_t width, height;
};

const char* const kFilters[] = {"nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"};  // by value

TEST(ImageResize, MatchesPillowForEveryFilter) {
  const ResizeCase cases[] = {{"src.png", 29, 35}, {"src.png", 75, 60}, {"src.png", 7, 5},
                              {"src.jpg", 64, 80}, {"src.jpg", 9, 13},  {"src.png", 40, 47},
                              {"src.png", 61, 71}};
  for (const auto& c : cases) {
    const RgbImage source = formats::decode_image(images_dir() / "resize" / c.source);
    std::string stem = c.source;
    stem[3] = '_';  // src.png -> src_png
    for (int filter = 0; filter < 6; ++filter) {
      const std::string name = stem + "_" + std::to_string(c.width) + "x" + std::to_string(c.height) + "_" +
                               kFilters[filter] + ".rgb";
      SCOPED_TRACE(name);
      const RgbImage resized = runtime::resize_like_pillow(source, c.width, c.height, filter);
      EXPECT_EQ(resized.width, c.width);
      EXPECT_EQ(resized.height, c.height);
      EXPECT_TRUE(same_pixels(resized.pixels, read_u8(images_dir() / "resize" / name)));
    }
  }
}

TEST(ImageResize, JpegTo224Bilinear) {
  const RgbImage source = formats::decode_image(images_dir() / "resize" / "src.jpg");
  const RgbImage resized = runtime::resize_like_pillow(source, 224, 224, runtime::kBilinear);
  EXPECT_TRUE(same_pixels(resized.pixels, read_u8(images_dir() / "resize" / "src_jpg_224x224_bilinear.rgb")));
}

TEST(ImageResize, SameSizeIsACopyAndBadArgumentsThrow) {
  const RgbImage source = formats::decode_image(images_dir() / "resize" / "src.png");
  for (int filter = 0; filter < 6; ++filter)
    EXPECT_EQ(runtime::resize_like_pillow(source, source.width, source.height, filter).pixels, source.pixels);
  EXPECT_THROW(runtime::resize_like_pillow(source, 0, 5, runtime::kBilinear), std::invalid_argument);
  EXPECT_THROW(runtime::resize_like_pillow(source, 5, 5, 6), std::invalid_argument);
  EXPECT_THROW(runtime::resize_like_pillow(source, 100'000, 100'000, runtime::kBilinear),
               std::invalid_argument);
}

// ---- the processor: config, pixel_values, pan-and-scan, prompt text ----

void expect_close(const std::vector<float>& got, const std::vector<float>& expected, float tolerance) {
  ASSERT_EQ(got.size(), expected.size());
  float worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - expected[i]));
  EXPECT_LE(worst, tolerance);
}

TEST(ImagePreprocess, MatchesTransformersFormula) {
  const fs::path dir = images_dir() / "processor_a";
  const auto c = runtime::load_image_processor_config(dir);
  EXPECT_EQ(c.height, 24);
  EXPECT_EQ(c.width, 32);
  EXPECT_EQ(c.resample, runtime::kBicubic);
  EXPECT_DOUBLE_EQ(c.image_std[2], 0.27577711);
  const auto pv = runtime::preprocess_image(formats::decode_image(dir / "image.png"), c, c.do_pan_and_scan);
  EXPECT_EQ(pv.count, 1);
  EXPECT_EQ(pv.height, 24);
  EXPECT_EQ(pv.width, 32);
  // Bit for bit (the brief's bar is 1e-6): the same float32 operations as numpy's, in the same order.
  expect_close(pv.data, test::read_f32(dir / "pixel_values.f32"), 0.0f);
}

TEST(ImagePreprocess, PanAndScanMatchesTransformers) {
  // processor_config.json's image_processor overrides preprocessor_config.json: size 20x20, bilinear,
  // pan-and-scan with min crop 16, at most 3 crops: an 80x30 image gives crops 27, 27 and 26 wide.
  const fs::path dir = images_dir() / "processor_b";
  const auto c = runtime::load_image_processor_config(dir);
  EXPECT_TRUE(c.do_pan_and_scan);
  EXPECT_EQ(c.height, 20);
  EXPECT_EQ(c.resample, runtime::kBilinear);
  EXPECT_EQ(c.pan_and_scan_max_num_crops, 3);
  const auto pv = runtime::preprocess_image(formats::decode_image(dir / "image.png"), c, c.do_pan_and_scan);
  EXPECT_EQ(pv.count, 4);
  expect_close(pv.data, test::read_f32(dir / "pixel_values.f32"), 0.0f);
}

TEST(ImagePreprocess, SharedFixtureReferencePixelValues) {
  const fs::path dir = test::data_dir() / "gemma3-tiny-vision";
  const auto c = runtime::load_image_processor_config(dir);
  const auto pv = runtime::preprocess_image(formats::decode_image(dir / "reference_image.png"), c, false);
  EXPECT_EQ(pv.count, 1);
  EXPECT_EQ(pv.height, 224);
  EXPECT_EQ(pv.width, 224);
  // The fixture computed (u8 / 255 - 0.5) / 0.5 in float64: transformers' float32 steps land within 6e-8.
  expect_close(pv.data, test::read_f32(dir / "reference_pixel_values.f32"), 1e-6f);
}

TEST(ImagePreprocess, WithoutRescaleOrNormalize) {
  RgbImage image{2, 1, {0, 128, 255, 10, 20, 30}};
  runtime::ImageProcessorConfig c;
  c.do_resize = false;
  c.do_rescale = false;
  c.image_mean = {1, 2, 3};
  c.image_std = {2, 2, 2};
  auto pv = runtime::preprocess_image(image, c, false);
  EXPECT_EQ(pv.data,
            (std::vector<float>{-0.5f, 4.5f, 63.0f, 9.0f, 126.0f, 13.5f}));  // (u8 - mean) / std, CHW
  c.do_normalize = false;
  pv = runtime::preprocess_image(image, c, false);
  EXPECT_EQ(pv.data, (std::vector<float>{0, 10, 128, 20, 255, 30}));
}

TEST(ImageProcessorConfig, DefaultsNullsAndErrors) {
  test::ScratchDir dir;
  auto c = runtime::load_image_processor_config(dir.path());  // no files: Gemma3ImageProcessor's defaults
  EXPECT_EQ(c.height, 224);
  EXPECT_EQ(c.width, 224);
  EXPECT_EQ(c.resample, runtime::kBilinear);
  EXPECT_DOUBLE_EQ(c.rescale_factor, 1.0 / 255);
  EXPECT_FALSE(c.do_pan_and_scan);
  EXPECT_EQ(c.pan_and_scan_min_crop_size, 256);
  EXPECT_EQ(c.pan_and_scan_max_num_crops, 4);
  EXPECT_DOUBLE_EQ(c.pan_and_scan_min_ratio_to_activate, 1.2);

  auto write = [&](const char* file, const std::string& text) { std::ofstream(dir.path() / file) << text; };
  write("preprocessor_config.json",
        R"({"size": 896, "resample": null, "image_mean": 0.25, "do_pan_and_scan": true})");
  c = runtime::load_image_processor_config(dir.path());
  EXPECT_EQ(c.height, 896);
  EXPECT_EQ(c.width, 896);
  EXPECT_EQ(c.resample, runtime::kBilinear);
  EXPECT_EQ(c.image_mean, (std::array<double, 3>{0.25, 0.25, 0.25}));
  EXPECT_TRUE(c.do_pan_and_scan);

  for (const std::string bad :
       {R"({"resample": "bilinear"})", R"({"resample": 7})", R"({"size": {"shortest_edge": 5}})",
        R"({"image_std": [0.5, 0.5]})", R"({"do_resize": 1})"}) {
    write("preprocessor_config.json", bad);
    const std::string message = runtime_error_of([&] { runtime::load_image_processor_config(dir.path()); });
    const std::string key = bad.substr(2, bad.find('"', 2) - 2);
    EXPECT_NE(message.find("preprocessor_config.json: " + key + ": "), std::string::npos) << message;
  }
  write("preprocessor_config.json", "{}");
  write("processor_config.json", R"({"image_processor": {"pan_and_scan_max_num_crops": 0}})");
  EXPECT_NE(runtime_error_of([&] {
              runtime::load_image_processor_config(dir.path());
            }).find("processor_config.json: image_processor: pan_and_scan_max_num_crops: "),
            std::string::npos);
}

// The expected boxes follow Gemma3ImageProcessor.pan_and_scan by hand, for min crop 256 and 4 crops at most:
//   n = min(floor(long / 256), floor(long / short + 0.5)), clamped to [2, 4]; crop = ceil(side / n);
//   no crops when long / short < 1.2 or the crop's short side is under 256.
TEST(ImagePanAndScan, CropBoxes) {
  const runtime::ImageProcessorConfig c;
  using Boxes = std::vector<std::array<int64_t, 4>>;
  auto boxes = [&](int64_t w, int64_t h) {
    Boxes out;
    for (const auto& b : runtime::pan_and_scan_crops(w, h, c)) out.push_back({b.x, b.y, b.width, b.height});
    return out;
  };
  // 1200x400: ratio 3 -> floor(3.5) = 3, floor(1200 / 256) = 4 -> 3 crops of ceil(1200 / 3) = 400.
  EXPECT_EQ(boxes(1200, 400), (Boxes{{0, 0, 400, 400}, {400, 0, 400, 400}, {800, 0, 400, 400}}));
  // 1201x400: crops of ceil(1201 / 3) = 401; numpy's slice cuts the last one to 1201 - 802 = 399.
  EXPECT_EQ(boxes(1201, 400), (Boxes{{0, 0, 401, 400}, {401, 0, 401, 400}, {802, 0, 399, 400}}));
  // 500x1700 (portrait): ratio 3.4 -> 3 crops of ceil(1700 / 3) = 567 rows, the last 1700 - 1134 = 566.
  EXPECT_EQ(boxes(500, 1700), (Boxes{{0, 0, 500, 567}, {0, 567, 500, 567}, {0, 1134, 500, 566}}));
  // 3000x300: ratio 10 -> 10 crops, capped at 4 of 750.
  EXPECT_EQ(boxes(3000, 300),
            (Boxes{{0, 0, 750, 300}, {750, 0, 750, 300}, {1500, 0, 750, 300}, {2250, 0, 750, 300}}));
  // 1200x1000: ratio exactly 1.2 activates; floor(1.7) = 1, raised to 2 crops of 600.
  EXPECT_EQ(boxes(1200, 1000), (Boxes{{0, 0, 600, 1000}, {600, 0, 600, 1000}}));
  EXPECT_TRUE(boxes(1000, 900).empty());  // ratio 1.11 < 1.2
  EXPECT_TRUE(boxes(900, 1000).empty());
  EXPECT_TRUE(boxes(600, 200).empty());  // 2 crops of 300x200: under 256
  EXPECT_TRUE(boxes(224, 224).empty());
}

TEST(ImagePromptText, AsGemma3ProcessorWritesIt) {
  const std::string f =
      "\n\n<start_of_image><image_soft_token><image_soft_token><image_soft_token><end_of_image>\n\n";
  EXPECT_EQ(runtime::image_prompt_text(0, 3), f);
  EXPECT_EQ(
      runtime::image_prompt_text(2, 3),
      "Here is the original image " + f + " and here are some crops to help you see better " + f + " " + f);
  EXPECT_EQ(runtime::image_prompt_text(0, 256).size(),
            std::string("\n\n<start_of_image><end_of_image>\n\n").size() +
                256 * std::string("<image_soft_token>").size());
}

}  // namespace
}  // namespace ge
