#include "runtime/image_processor.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

#include "formats/json_file.h"
#include "models/config_fields.h"

namespace ge::runtime {
namespace {

using formats::RgbImage;

// ---- preprocessor_config.json ----

void read_mean_or_std(const models::ConfigFields& f, const std::string& key, std::array<double, 3>& out) {
  const auto& v = f.get(key);
  if (v.is_number()) {  // one number for every channel, as normalize() broadcasts it
    out.fill(v.get<double>());
    return;
  }
  if (!v.is_array() || v.size() != 3) f.fail(key, "must be a number or a list of 3 numbers");
  for (int c = 0; c < 3; ++c) {
    if (!v[c].is_number()) f.fail(key, "must be a number or a list of 3 numbers");
    out[c] = v[c].get<double>();
  }
}

void read_size(const models::ConfigFields& f, ImageProcessorConfig& c) {
  const auto& v = f.get("size");
  auto positive = [](const nlohmann::json& n) { return n.is_number_integer() && n.get<int64_t>() > 0; };
  if (positive(v)) {  // get_size_dict(int): a square
    c.height = c.width = v.get<int64_t>();
    return;
  }
  if (!v.is_object() || !v.contains("height") || !v.contains("width") || !positive(v["height"]) ||
      !positive(v["width"]))
    f.fail("size", "must be {\"height\": H, \"width\": W} or one size, positive integers");
  c.height = v["height"].get<int64_t>();
  c.width = v["width"].get<int64_t>();
}

// Every key that `fields` gives (not null) overrides `c`; errors name `source` and the key.
void apply_fields(const nlohmann::json& fields, const std::string& source, ImageProcessorConfig& c) {
  if (!fields.is_object()) throw std::runtime_error(source + ": must be a JSON object");
  static const nlohmann::json kNoDefaults = nlohmann::json::object();
  const models::ConfigFields f(fields, kNoDefaults, source);
  if (f.has("size")) read_size(f, c);
  if (f.has("resample")) {
    c.resample = static_cast<int>(f.integer("resample", 0));
    if (c.resample > kHamming) f.fail("resample", "must be a PIL resampling filter, 0 to 5");
  }
  for (auto [key, flag] : {std::pair{"do_resize", &c.do_resize},
                           {"do_rescale", &c.do_rescale},
                           {"do_normalize", &c.do_normalize},
                           {"do_convert_rgb", &c.do_convert_rgb},
                           {"do_pan_and_scan", &c.do_pan_and_scan}})
    if (f.has(key)) *flag = f.boolean(key);
  if (f.has("rescale_factor")) c.rescale_factor = f.number("rescale_factor");
  if (f.has("image_mean")) read_mean_or_std(f, "image_mean", c.image_mean);
  if (f.has("image_std")) read_mean_or_std(f, "image_std", c.image_std);
  if (f.has("pan_and_scan_min_crop_size"))
    c.pan_and_scan_min_crop_size = f.integer("pan_and_scan_min_crop_size");
  if (f.has("pan_and_scan_max_num_crops"))
    c.pan_and_scan_max_num_crops = f.integer("pan_and_scan_max_num_crops");
  if (f.has("pan_and_scan_min_ratio_to_activate"))
    c.pan_and_scan_min_ratio_to_activate = f.number("pan_and_scan_min_ratio_to_activate");
}

// ---- Pillow's resampling filters (Resample.c), in its arithmetic ----

struct Filter {
  double (*weight)(double x);
  double support;
};

double box_weight(double x) {
  return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

double bilinear_weight(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_weight(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= std::numbers::pi;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as Pillow writes them
}

double bicubic_weight(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= std::numbers::pi;
  return std::sin(x) / x;
}

double lanczos_weight(double x) {
  return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

Filter filter_for(int resample) {
  switch (resample) {
    case kBox:
      return {box_weight, 0.5};
    case kBilinear:
      return {bilinear_weight, 1.0};
    case kHamming:
      return {hamming_weight, 1.0};
    case kBicubic:
      return {bicubic_weight, 2.0};
    case kLanczos:
      return {lanczos_weight, 3.0};
  }
  throw std::invalid_argument("resize: unknown resample filter " + std::to_string(resample));
}

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's: 8 bits of result, 2 of headroom for negative lobes

// For each output pixel along one axis: the first input pixel it reads and its fixed-point weights.
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;  // [out]
  std::vector<int32_t> k;         // [out * ksize]
};

// precompute_coeffs + normalize_coeffs_8bpc: the box is the whole image, held in float as Pillow holds it.
Coefficients coefficients(int64_t in_size, int64_t out_size, const Filter& filter) {
  const double scale = static_cast<double>(static_cast<float>(in_size)) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size), c.count.resize(out_size);
  c.k.assign(out_size * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(0, static_cast<int>(center - support + 0.5));
    const int xmax = std::min(static_cast<int>(in_size), static_cast<int>(center + support + 0.5)) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter.weight((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = (ww != 0.0 ? w[x] / ww : w[x]) * (1 << kPrecisionBits);
      c.k[xx * c.ksize + x] = static_cast<int32_t>(v < 0 ? -0.5 + v : 0.5 + v);
    }
    c.first[xx] = xmin, c.count[xx] = xmax;
  }
  return c;
}

uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass over input rows [row0, row0 + out.height).
void resample_horizontal(const RgbImage& in, int64_t row0, const Coefficients& c, RgbImage& out) {
  for (int64_t y = 0; y < out.height; ++y) {
    const uint8_t* row = &in.pixels[(row0 + y) * in.width * 3];
    for (int64_t xx = 0; xx < out.width; ++xx) {
      const int32_t* k = &c.k[xx * c.ksize];
      const uint8_t* p = row + c.first[xx] * 3;
      int32_t s[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
      for (int x = 0; x < c.count[xx]; ++x)
        for (int ch = 0; ch < 3; ++ch) s[ch] += p[x * 3 + ch] * k[x];
      for (int ch = 0; ch < 3; ++ch) out.pixels[(y * out.width + xx) * 3 + ch] = clip8(s[ch]);
    }
  }
}

// Vertical pass; `row0` is subtracted from the coefficients' first rows (the input may start there).
void resample_vertical(const RgbImage& in, int64_t row0, const Coefficients& c, RgbImage& out) {
  const int64_t stride = in.width * 3;
  for (int64_t yy = 0; yy < out.height; ++yy) {
    const int32_t* k = &c.k[yy * c.ksize];
    const uint8_t* column0 = &in.pixels[(c.first[yy] - row0) * stride];
    for (int64_t i = 0; i < stride; ++i) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < c.count[yy]; ++y) s += column0[y * stride + i] * k[y];
      out.pixels[yy * stride + i] = clip8(s);
    }
  }
}

RgbImage blank(int64_t width, int64_t height) {
  return {width, height, std::vector<uint8_t>(static_cast<size_t>(width * height * 3))};
}

// ImagingResampleInner: the horizontal pass reads only the rows the vertical pass will use.
RgbImage resize_separable(const RgbImage& in, int64_t width, int64_t height, const Filter& filter) {
  const bool horizontal = width != in.width, vertical = height != in.height;
  const Coefficients ch = coefficients(in.width, width, filter);
  const Coefficients cv = coefficients(in.height, height, filter);
  const int64_t row_first = cv.first.front(), row_last = cv.first.back() + cv.count.back();
  if (!horizontal) {
    RgbImage out = blank(width, height);
    resample_vertical(in, 0, cv, out);
    return out;
  }
  RgbImage rows = blank(width, vertical ? row_last - row_first : in.height);
  resample_horizontal(in, vertical ? row_first : 0, ch, rows);
  if (!vertical) return rows;
  RgbImage out = blank(width, height);
  resample_vertical(rows, row_first, cv, out);
  return out;
}

// ImagingScaleAffine as _resize calls it for NEAREST: source positions stepped by repeated addition, as
// Pillow accumulates them; a position that lands outside the source leaves the pixel black.
RgbImage resize_nearest(const RgbImage& in, int64_t width, int64_t height) {
  const double ax = static_cast<double>(static_cast<float>(in.width)) / static_cast<double>(width);
  const double ay = static_cast<double>(static_cast<float>(in.height)) / static_cast<double>(height);
  auto source_index = [](double v) { return v < 0.0 ? -1 : static_cast<int64_t>(v); };
  std::vector<int64_t> xs(width);
  double xo = ax * 0.5;
  for (int64_t x = 0; x < width; ++x, xo += ax) xs[x] = source_index(xo);
  RgbImage out = blank(width, height);
  double yo = ay * 0.5;
  for (int64_t y = 0; y < height; ++y, yo += ay) {
    const int64_t yi = source_index(yo);
    if (yi < 0 || yi >= in.height) continue;
    for (int64_t x = 0; x < width; ++x)
      if (xs[x] >= 0 && xs[x] < in.width)
        for (int c = 0; c < 3; ++c)
          out.pixels[(y * width + x) * 3 + c] = in.pixels[(yi * in.width + xs[x]) * 3 + c];
  }
  return out;
}

// ---- the processor ----

RgbImage crop(const RgbImage& image, const CropBox& b) {
  RgbImage out = blank(b.width, b.height);
  for (int64_t y = 0; y < b.height; ++y) {
    const auto* from = &image.pixels[((b.y + y) * image.width + b.x) * 3];
    std::copy(from, from + b.width * 3, &out.pixels[y * b.width * 3]);
  }
  return out;
}

// rescale (float64 product, cast to float32), then normalize in float32: numpy's dtypes in
// transformers' rescale() and normalize().
void to_pixel_values(const RgbImage& image, const ImageProcessorConfig& c, float* out) {
  const int64_t plane = image.width * image.height;
  for (int ch = 0; ch < 3; ++ch) {
    const float mean = static_cast<float>(c.image_mean[ch]), std = static_cast<float>(c.image_std[ch]);
    for (int64_t i = 0; i < plane; ++i) {
      const uint8_t u = image.pixels[i * 3 + ch];
      float v = c.do_rescale ? static_cast<float>(u * c.rescale_factor) : static_cast<float>(u);
      if (c.do_normalize) v = (v - mean) / std;
      out[ch * plane + i] = v;
    }
  }
}

}  // namespace

ImageProcessorConfig load_image_processor_config(const std::filesystem::path& dir) {
  ImageProcessorConfig c;
  const auto preprocessor = dir / "preprocessor_config.json";
  if (std::filesystem::exists(preprocessor))
    apply_fields(formats::read_json_file(preprocessor), preprocessor.string(), c);
  const auto processor = dir / "processor_config.json";
  if (std::filesystem::exists(processor)) {
    const auto j = formats::read_json_file(processor);
    if (j.is_object() && j.contains("image_processor") && !j["image_processor"].is_null())
      apply_fields(j["image_processor"], processor.string() + ": image_processor", c);
  }
  return c;
}

RgbImage resize_like_pillow(const RgbImage& image, int64_t width, int64_t height, int resample) {
  if (width < 1 || height < 1 || image.width < 1 || image.height < 1)
    throw std::invalid_argument("resize: sizes must be positive (" + std::to_string(image.width) + "x" +
                                std::to_string(image.height) + " -> " + std::to_string(width) + "x" +
                                std::to_string(height) + ")");
  if (width > formats::kMaxImagePixels / height)
    throw std::invalid_argument("resize: " + std::to_string(width) + "x" + std::to_string(height) +
                                " is over the image size limit");
  if (resample < kNearest || resample > kHamming)
    throw std::invalid_argument("resize: unknown resample filter " + std::to_string(resample));
  if (width == image.width && height == image.height) return image;
  if (resample == kNearest) return resize_nearest(image, width, height);
  return resize_separable(image, width, height, filter_for(resample));
}

std::vector<CropBox> pan_and_scan_crops(int64_t width, int64_t height, const ImageProcessorConfig& c) {
  if (width < 1 || height < 1 || c.pan_and_scan_min_crop_size < 1 || c.pan_and_scan_max_num_crops < 1)
    throw std::invalid_argument(
        "pan-and-scan: image size, min crop size and max number of crops must be positive");
  // The long side is cut into about as many crops as the aspect ratio, each at least the min crop size.
  const bool landscape = width >= height;
  const int64_t long_side = landscape ? width : height, short_side = landscape ? height : width;
  const double ratio = static_cast<double>(long_side) / static_cast<double>(short_side);
  if (ratio < c.pan_and_scan_min_ratio_to_activate) return {};
  int64_t n = static_cast<int64_t>(std::floor(ratio + 0.5));
  n = std::min(
      static_cast<int64_t>(std::floor(static_cast<double>(long_side) / c.pan_and_scan_min_crop_size)), n);
  n = std::min(c.pan_and_scan_max_num_crops, std::max<int64_t>(2, n));
  const int64_t n_w = landscape ? n : 1, n_h = landscape ? 1 : n;
  const auto crop_w = static_cast<int64_t>(std::ceil(static_cast<double>(width) / n_w));
  const auto crop_h = static_cast<int64_t>(std::ceil(static_cast<double>(height) / n_h));
  if (std::min(crop_w, crop_h) < c.pan_and_scan_min_crop_size) return {};
  std::vector<CropBox> boxes;
  for (int64_t i = 0; i < n_h; ++i)
    for (int64_t j = 0; j < n_w; ++j) {
      const int64_t x = crop_w * j, y = crop_h * i;  // numpy slices stop at the image's edge
      boxes.push_back({x, y, std::max<int64_t>(0, std::min(crop_w, width - x)),
                       std::max<int64_t>(0, std::min(crop_h, height - y))});
    }
  return boxes;
}

PixelValues preprocess_image(const RgbImage& image, const ImageProcessorConfig& c, bool pan_and_scan) {
  std::vector<RgbImage> images{image};
  if (pan_and_scan) {
    for (const CropBox& b : pan_and_scan_crops(image.width, image.height, c)) {
      // transformers hands such a crop to PIL, which refuses it; only tiny min crop sizes get here
      if (b.width == 0 || b.height == 0)
        throw std::invalid_argument("pan-and-scan: a crop of the image is empty");
      images.push_back(crop(image, b));
    }
  }
  if (!c.do_resize && images.size() > 1)
    throw std::invalid_argument("preprocess: pan-and-scan crops need do_resize (their sizes differ)");
  PixelValues pv;
  pv.count = static_cast<int64_t>(images.size());
  pv.height = c.do_resize ? c.height : image.height;
  pv.width = c.do_resize ? c.width : image.width;
  const int64_t per_image = 3 * pv.height * pv.width;
  pv.data.resize(pv.count * per_image);
  for (int64_t i = 0; i < pv.count; ++i) {
    const RgbImage sized =
        c.do_resize ? resize_like_pillow(images[i], pv.width, pv.height, c.resample) : images[i];
    to_pixel_values(sized, c, &pv.data[i * per_image]);
  }
  return pv;
}

std::string image_prompt_text(int64_t n_crops, int64_t mm_tokens_per_image) {
  std::string image = "\n\n<start_of_image>";
  for (int64_t i = 0; i < mm_tokens_per_image; ++i) image += "<image_soft_token>";
  image += "<end_of_image>\n\n";
  if (n_crops == 0) return image;
  std::string text =
      "Here is the original image " + image + " and here are some crops to help you see better ";
  for (int64_t i = 0; i < n_crops; ++i) text += (i ? " " : "") + image;
  return text;
}

}  // namespace ge::runtime
