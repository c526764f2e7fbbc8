// A llama.cpp "clip" GGUF with a Gemma 3 projector (projector_type gemma3, as `gemma convert --mmproj` or
// llama.cpp's converter writes it) seen as the vision side of a Gemma 3 checkpoint: the SigLIP + projector
// config rebuilt from its clip.vision.* metadata, its tensors under their Hugging Face names.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "formats/gguf.h"
#include "models/siglip/config.h"
#include "tensor/tensor_source.h"

namespace ge::loader {

// Refuses a file that is not a clip file with a vision encoder and a gemma3 projector, or whose projection
// does not land in the text model's embedding space (clip.vision.projection_dim != text_hidden_size;
// `text_model_name` names the text model in that message). The image, start- and end-of-image ids are the
// text tokenizer's (<image_soft_token>, <start_of_image>, <end_of_image>): the clip file has no vocabulary.
// Tokens per image: (patches per side / clip.vision.projector.scale_factor)^2, the factor 4 when absent as
// for every published Gemma 3. The file stores the soft-embedding norm as w + 1: bind the encoder with
// norm_adds_one = false.
siglip::Gemma3VisionConfig vision_config_from_mmproj(const formats::GgufFile& file, int64_t text_hidden_size,
                                                     const std::string& text_model_name,
                                                     int32_t image_token_id, int32_t boi_token_id,
                                                     int32_t eoi_token_id);

// The file's tensors under the names Gemma3VisionEncoder binds ("vision_tower.vision_model.encoder.layers.0.
// mlp.fc1.weight" for "v.blk.0.ffn_up.weight"), in their stored types; throws for a tensor name it cannot
// place.
std::unique_ptr<TensorSource> hf_named_vision_tensors(std::unique_ptr<formats::GgufFile> file);

// What the image processor normalises pixels with: (x - mean) / std_dev per RGB channel, from
// clip.vision.image_mean / image_std.
struct ImageNormalization {
  std::array<float, 3> mean{};
  std::array<float, 3> std_dev{};
};
ImageNormalization image_normalization_from_mmproj(const formats::GgufFile& file);

}  // namespace ge::loader
