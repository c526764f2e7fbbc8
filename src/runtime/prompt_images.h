// Images attached to a prompt, made ready for the generator the way Gemma3Processor does it: pixel values
// of the image (and of its pan-and-scan crops, each read by the encoder as an image of its own) and the
// prompt text that stands for it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/image.h"
#include "runtime/generator.h"
#include "runtime/image_processor.h"

namespace ge::runtime {

struct PreparedImage {
  std::string name;         // the file, for messages
  PixelValues pixels;       // [1 + crops, channels, size, size]
  std::string prompt_text;  // what its <start_of_image> marker expands to
  std::vector<uint64_t> digests;  // one per crop

  // One PromptImage per crop, pointing into `pixels`.
  std::vector<PromptImage> parts() const;
};

PreparedImage prepare_image(const formats::RgbImage& image, std::string name, const ImageProcessorConfig& config,
                            bool pan_and_scan, int64_t mm_tokens_per_image);
PreparedImage prepare_image_file(const std::filesystem::path& path, const ImageProcessorConfig& config,
                                 bool pan_and_scan, int64_t mm_tokens_per_image);

// The prompt texts and the encoder's images of `images`, in order.
std::vector<std::string> prompt_texts(const std::vector<PreparedImage>& images);
std::vector<PromptImage> prompt_parts(const std::vector<PreparedImage>& images);

}  // namespace ge::runtime
