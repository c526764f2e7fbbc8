// Opens a model folder (Hugging Face layout) or a GGUF file and hands back everything a frontend needs: the
// checkpoint's tensors, the model bound to them, the tokenizer and the generation defaults.
// The only layer that knows both file formats and models.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "models/causal_lm.h"
#include "models/gemma/config.h"
#include "models/siglip/model.h"
#include "nn/layer_source.h"
#include "runtime/chat_template.h"
#include "runtime/image_processor.h"
#include "runtime/sampler.h"
#include "tensor/tensor_source.h"
#include "tokenizer/tokenizer.h"

namespace ge::loader {

struct GenerationDefaults {
  std::vector<int32_t> eos_ids;      // generation_config.json (a list for Gemma 3 IT), else config.json
  runtime::SamplingParams sampling;  // temperature / top_k / top_p / min_p / repetition_penalty
  // generation_config.json's length limits, as transformers reads them: max_new_tokens caps the answer,
  // max_length the prompt and the answer together; max_new_tokens wins when both are there.
  std::optional<int64_t> max_new_tokens, max_length;

  // The most tokens to answer a prompt of `prompt_tokens` with; -1: no limit (until EOS or the context).
  int64_t answer_limit(int64_t prompt_tokens) const;
};

// The vision side of a Gemma 3 model: its config at load, its tower bound on first use, so that text-only
// prompts never read the vision weights.
struct VisionPart {
  siglip::Gemma3VisionConfig config;
  std::unique_ptr<TensorSource> own_tensors;  // an mmproj file's (a folder's are the model's tensors)
  const TensorSource* tensors = nullptr;
  bool norm_adds_one = true;  // false for GGUF, which stores w + 1
  runtime::ImageProcessorConfig processor;  // preprocessor_config.json, or the mmproj's size, mean and std
  std::unique_ptr<siglip::Gemma3VisionEncoder> encoder;

  siglip::Gemma3VisionEncoder& bind();
};

struct LoadedModel {
  std::filesystem::path dir;
  std::unique_ptr<TensorSource> tensors;
  std::unique_ptr<nn::LayerSource> layers;  // the tensors, and how config.json says they are quantized
  std::unique_ptr<models::CausalLM> model;
  Tokenizer tokenizer;
  GenerationDefaults defaults;
  std::unique_ptr<VisionPart> vision;  // null for a model that reads text only
  runtime::ChatFormat chat_format = runtime::ChatFormat::kGemma;
};

gemma::Config load_config(const std::filesystem::path& dir);
// config.json's MLX "quantization" (empty for an unquantized folder).
nn::QuantizationConfig load_quantization_config(const std::filesystem::path& dir);
GenerationDefaults load_generation_defaults(const std::filesystem::path& dir);
// `path`: a Hugging Face folder, or a Gemma GGUF file (gemma, gemma2, gemma3 as `gemma convert` writes it):
// a file named .gguf, or any file that starts with GGUF's magic (Ollama's blobs have no extension).
bool is_gguf(const std::filesystem::path& path);
// `mmproj`: a llama.cpp "clip" file with the vision tower of a GGUF text model (ignored when empty).
LoadedModel load_model(const std::filesystem::path& path, int64_t max_chunk, const std::filesystem::path& mmproj = {});
// What turns an image into pixel values and prompt text, without loading any weights.
struct ImagePreprocessing {
  runtime::ImageProcessorConfig processor;
  int64_t mm_tokens_per_image = 0;
};
ImagePreprocessing load_image_preprocessing(const std::filesystem::path& path, const std::filesystem::path& mmproj = {});

// Only the tokenizer: a folder's tokenizer files, or the vocabulary in a GGUF file's metadata.
Tokenizer load_tokenizer(const std::filesystem::path& path);

}  // namespace ge::loader
