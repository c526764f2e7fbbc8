// Hugging Face's Gemma3ImageProcessor (transformers' image_processing_gemma3.py, the PIL/numpy one) and
// the prompt text Gemma3Processor expands an image to, reproduced to the bit: resizing is Pillow's
// fixed-point resampling on uint8 (Resample.c), not a float filter, because that is what the processor
// calls; rescale and normalize follow numpy's dtypes.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/image.h"

namespace ge::runtime {

// PIL.Image.Resampling values, as preprocessor_config.json's "resample" holds them.
enum Resample : int { kNearest = 0, kLanczos = 1, kBilinear = 2, kBicubic = 3, kBox = 4, kHamming = 5 };

struct ImageProcessorConfig {  // defaults: Gemma3ImageProcessor's, and Gemma3Processor's for pan-and-scan
  int64_t height = 224, width = 224;  // "size"
  int resample = kBilinear;
  bool do_resize = true, do_rescale = true, do_normalize = true;
  bool do_convert_rgb = true;  // decoding always yields RGB, so this only records the file's value
  double rescale_factor = 1.0 / 255;
  std::array<double, 3> image_mean{0.5, 0.5, 0.5}, image_std{0.5, 0.5, 0.5};
  bool do_pan_and_scan = false;
  int64_t pan_and_scan_min_crop_size = 256, pan_and_scan_max_num_crops = 4;
  double pan_and_scan_min_ratio_to_activate = 1.2;
};

// preprocessor_config.json in `dir`, overlaid with the "image_processor" object of processor_config.json
// when there is one (newer transformers save it there). A missing file, key or null value keeps the
// default; "size" is {"height", "width"} or one integer; "image_mean"/"image_std" are 3 numbers or one.
// Throws std::runtime_error "FILE: KEY: what is wrong" for a value of the wrong type or range.
ImageProcessorConfig load_image_processor_config(const std::filesystem::path& dir);

// Pillow's Image.resize((width, height), resample) of an RGB image, bit for bit: the separable filter of
// Resample.c (support scaled by the downscale factor, coefficients normalized in double, then 22-bit fixed
// point; horizontal pass over the rows the vertical pass needs, then vertical; each pass skipped when its
// dimension does not change), and for kNearest its affine nearest-neighbour mapping. Same size -> a copy.
// Throws std::invalid_argument for a non-positive size or an unknown resample.
formats::RgbImage resize_like_pillow(const formats::RgbImage& image, int64_t width, int64_t height,
                                     int resample);

struct CropBox {
  int64_t x, y, width, height;
};

// Gemma3ImageProcessor.pan_and_scan: the crops of a width x height image, row by row, cut where numpy's
// slicing cuts them (the last ones may be narrower than the others); empty when the aspect ratio is
// under pan_and_scan_min_ratio_to_activate or a crop would be under pan_and_scan_min_crop_size.
std::vector<CropBox> pan_and_scan_crops(int64_t width, int64_t height, const ImageProcessorConfig& c);

struct PixelValues {
  int64_t count = 0, height = 0, width = 0;
  std::vector<float> data;  // float32 [count, 3, height, width]
};

// The processor's pixel_values for one image: the image, then (when `pan_and_scan`) its crops cut from
// the unresized image, each resized, rescaled (float32(double(u8) * rescale_factor)) and normalized
// ((x - mean) / std in float32), channels first. With do_resize false the image keeps its size, and
// crops (whose sizes differ) are refused with std::invalid_argument.
PixelValues preprocess_image(const formats::RgbImage& image, const ImageProcessorConfig& c,
                             bool pan_and_scan);

// What Gemma3Processor writes in the prompt for an image with n_crops crops. With
// F = "\n\n<start_of_image>" + mm_tokens_per_image x "<image_soft_token>" + "<end_of_image>\n\n":
// no crops -> F; otherwise "Here is the original image " + F + " and here are some crops to help you see
// better " + F + (" " + F) per further crop.
std::string image_prompt_text(int64_t n_crops, int64_t mm_tokens_per_image);

}  // namespace ge::runtime
