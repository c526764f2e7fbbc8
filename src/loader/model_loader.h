// Opens a model folder (Hugging Face layout) or a GGUF file and hands back everything a frontend needs: the
// checkpoint's tensors, the model bound to them, the tokenizer and the generation defaults.
// The only layer that knows both file formats and models.
#pragma once
#include <filesystem>
#include <memory>
#include <vector>

#include "models/gemma/model.h"
#include "nn/layer_source.h"
#include "runtime/sampler.h"
#include "tensor/tensor_source.h"
#include "tokenizer/tokenizer.h"

namespace ge::loader {

struct GenerationDefaults {
  std::vector<int32_t> eos_ids;      // generation_config.json (a list for Gemma 3 IT), else config.json
  runtime::SamplingParams sampling;  // temperature / top_k / top_p / min_p / repetition_penalty
};

struct LoadedModel {
  std::filesystem::path dir;
  std::unique_ptr<TensorSource> tensors;
  std::unique_ptr<nn::LayerSource> layers;  // the tensors, and how config.json says they are quantized
  std::unique_ptr<gemma::Model> model;
  Tokenizer tokenizer;
  GenerationDefaults defaults;
};

gemma::Config load_config(const std::filesystem::path& dir);
// config.json's MLX "quantization" (empty for an unquantized folder).
nn::QuantizationConfig load_quantization_config(const std::filesystem::path& dir);
GenerationDefaults load_generation_defaults(const std::filesystem::path& dir);
// `path`: a Hugging Face folder, or a Gemma GGUF file (gemma, gemma2, gemma3 as `gemma convert` writes it).
LoadedModel load_model(const std::filesystem::path& path, int64_t max_chunk);
// Only the tokenizer: a folder's tokenizer files, or the vocabulary in a GGUF file's metadata.
Tokenizer load_tokenizer(const std::filesystem::path& path);

}  // namespace ge::loader
