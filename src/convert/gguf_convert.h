// Hugging Face checkpoint folder -> GGUF, with the metadata and tensor names llama.cpp's
// convert_hf_to_gguf.py writes, so that llama.cpp and Ollama load the file unchanged. Conversion only
// renames and repacks: it reads config.json, the tokenizer files and the safetensors, never a model's
// forward pass. Tensors are streamed one at a time (peak memory ~ a small conversion buffer, not the model).
//
// Supported: model_type gemma, gemma2, gemma3_text, gemma3 (its text model; the SigLIP tower and projector
// go to a separate "mmproj" file with convert_mmproj_to_gguf) and gemma3n (text model; audio and vision
// towers left out). Output types: f32, f16, bf16, q8_0, q4_0 (every matrix that type, as llama.cpp's
// converter writes them; a matrix whose rows are not whole 32-weight blocks is written as f16), and
// q4_k_m, q5_k_m, q6_k: the per-tensor mixes llama-quantize writes from an f16 GGUF (see quant_mix.cpp).
// Norms and other 1-D tensors are always f32. The mmproj file of a mix is written in f16, as llama.cpp's
// projectors ship (llama-quantize does not quantize them).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace ge::convert {

enum class OutType { F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K };

// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k" (either case: "Q4_K_M" as llama-quantize
// spells it).
std::optional<OutType> parse_out_type(std::string_view name);
std::string_view out_type_name(OutType t);  // lower case
// The names parse_out_type accepts, for messages: "f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k".
std::string out_type_names();
// q4_k_m, q5_k_m, q6_k: a type per tensor rather than one type for every matrix.
bool is_quant_mix(OutType t);

struct Progress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // tensor data written / to write
};
using ProgressCallback = std::function<void(const Progress&)>;

struct ConvertOptions {
  // nullopt: the checkpoint's own dtype (that of its embedding table; bf16 for Gemma).
  std::optional<OutType> out_type;
  ProgressCallback progress;  // called after each tensor; may be empty
  int threads = 0;            // threads that quantize block types; <= 0: all cores
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
