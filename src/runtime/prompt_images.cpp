#include "runtime/prompt_images.h"

namespace ge::runtime {

PreparedImage prepare_image(const formats::RgbImage& image, std::string name, const ImageProcessorConfig& config,
                            bool pan_and_scan, int64_t mm_tokens_per_image) {
  PreparedImage p;
  p.name = std::move(name);
  p.pixels = preprocess_image(image, config, pan_and_scan);
  p.prompt_text = image_prompt_text(p.pixels.count - 1, mm_tokens_per_image);
  const size_t per_crop = p.pixels.data.size() / static_cast<size_t>(p.pixels.count);
  for (int64_t i = 0; i < p.pixels.count; ++i)
    p.digests.push_back(image_digest(std::span(p.pixels.data).subspan(i * per_crop, per_crop)));
  return p;
}

PreparedImage prepare_image_file(const std::filesystem::path& path, const ImageProcessorConfig& config,
                                 bool pan_and_scan, int64_t mm_tokens_per_image) {
  return prepare_image(formats::decode_image(path), path.string(), config, pan_and_scan, mm_tokens_per_image);
}

std::vector<PromptImage> PreparedImage::parts() const {
  std::vector<PromptImage> out;
  const size_t per_crop = pixels.data.size() / static_cast<size_t>(pixels.count);
  for (int64_t i = 0; i < pixels.count; ++i) out.push_back({pixels.data.data() + i * per_crop, digests[i]});
  return out;
}

std::vector<std::string> prompt_texts(const std::vector<PreparedImage>& images) {
  std::vector<std::string> out;
  for (const PreparedImage& image : images) out.push_back(image.prompt_text);
  return out;
}

std::vector<PromptImage> prompt_parts(const std::vector<PreparedImage>& images) {
  std::vector<PromptImage> out;
  for (const PreparedImage& image : images) {
    const auto parts = image.parts();
    out.insert(out.end(), parts.begin(), parts.end());
  }
  return out;
}

}  // namespace ge::runtime
