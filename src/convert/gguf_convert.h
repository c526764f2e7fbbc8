// Hugging Face checkpoint folder -> GGUF, with the metadata and tensor names llama.cpp's
// convert_hf_to_gguf.py writes, so that llama.cpp and Ollama load the file unchanged. Conversion only
// renames and repacks: it reads config.json, the tokenizer files and the safetensors, never a model's
// forward pass. Tensors are streamed one at a time (peak memory ~ a small conversion buffer, not the model).
//
// Supported: model_type gemma, gemma2, gemma3_text, gemma3 (its text model; the SigLIP tower and projector
// go to a separate "mmproj" file with convert_mmproj_to_gguf) and gemma3n (text model; audio and vision
// towers left out). Output types: f32, f16, bf16, q8_0, q4_0; norms and other 1-D tensors are always f32,
// and with q8_0/q4_0 a matrix whose rows are not whole 32-weight blocks is written as f16.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace ge::convert {

enum class OutType { F32, F16, BF16, Q8_0, Q4_0 };

std::optional<OutType> parse_out_type(std::string_view name);  // "f32", "f16", "bf16", "q8_0", "q4_0"
std::string_view out_type_name(OutType t);

struct Progress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // tensor data written / to write
};
using ProgressCallback = std::function<void(const Progress&)>;

struct ConvertOptions {
  // nullopt: the checkpoint's own dtype (that of its embedding table; bf16 for Gemma).
  std::optional<OutType> out_type;
  ProgressCallback progress;  // called after each tensor; may be empty
};

struct ConvertResult {
  std::string architecture;  // "gemma", "gemma2", "gemma3", "gemma3n", "clip"
  OutType out_type = OutType::BF16;
  size_t tensor_count = 0;
  uint64_t tensor_bytes = 0;
};

// Writes out_path (through out_path + ".tmp" and a rename, so a failed conversion leaves neither).
// Throws std::runtime_error naming the file and the problem (missing config.json, unsupported
// model_type, a tensor missing or of an unexpected shape, an unwritable output, ...).
ConvertResult convert_to_gguf(const std::filesystem::path& hf_dir, const std::filesystem::path& out_path,
                              const ConvertOptions& options = {});

// The vision tower and projector of a Gemma 3 checkpoint (model_type gemma3) as the "clip" GGUF that
// llama.cpp's mtmd loads beside the text model (`--mmproj`). Same guarantees as convert_to_gguf.
ConvertResult convert_mmproj_to_gguf(const std::filesystem::path& hf_dir,
                                     const std::filesystem::path& out_path,
                                     const ConvertOptions& options = {});

}  // namespace ge::convert
