// Hugging Face checkpoint folder -> the quantized folder mlx-lm writes and loads (../shared/MLX_QUANT.md):
// every 2-D `.weight` of the text model whose rows are whole groups becomes `.weight` (U32 codes),
// `.scales` and, for affine, `.biases`; everything else (norms, vision/audio towers, the projector, odd
// shapes) is copied as it is. config.json gains the "quantization" and "quantization_config" dicts, and the
// tokenizer and generation files are copied unchanged.
//
// Tensors are streamed one at a time from the mmapped input (peak memory ~ one tensor's scales, not the
// model), and the folder is written as OUT.tmp and renamed to OUT only when complete: a failure, SIGINT or
// SIGTERM leaves neither.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>

#include "kernels/mlx_quant.h"

namespace ge::quantize {

struct Progress {
  size_t tensors_done = 0, tensors_total = 0;  // input tensors
  uint64_t bytes_done = 0, bytes_total = 0;    // output tensor data written / to write
};
using ProgressCallback = std::function<void(const Progress&)>;

// mlx-lm's shard limit (save_model: max_file_size_gb << 30).
inline constexpr uint64_t kDefaultShardBytes = uint64_t{5} << 30;

struct QuantizeOptions {
  kernels::QuantParams params;  // the top-level mode, bits and group size
  // The embedding table (and with it the tied LM head) stays in its float type: config entry `false`.
  bool keep_embedding = false;
  // The embedding table at these bits instead (affine only, same group size): a per-layer config entry.
  std::optional<int> embedding_bits;
  // Tensors go to model-0000i-of-0000N.safetensors files of at most this many data bytes (a tensor larger
  // than the limit gets a file of its own), with model.safetensors.index.json; one model.safetensors
  // when everything fits.
  uint64_t shard_bytes = kDefaultShardBytes;
  bool force = false;         // replace an existing output folder (and a stale OUT.tmp)
  int threads = 0;            // rows are quantized in parallel; <= 0: all cores
  ProgressCallback progress;  // called after each input tensor; may be empty
};

struct QuantizeResult {
  size_t quantized_tensors = 0;  // input weights written as codes + scales (+ biases)
  size_t copied_tensors = 0;     // input tensors written unchanged
  size_t shards = 0;             // safetensors files written
  uint64_t input_bytes = 0;      // tensor data read
  uint64_t output_bytes = 0;     // tensor data written
};

// Throws std::runtime_error naming the file, tensor or option at fault (missing or invalid config.json,
// parameters mx.quantize rejects, an already quantized input, an existing output folder without `force`,
// an unreadable tensor, ...); nothing is left at `out` or `out`.tmp then.
QuantizeResult quantize_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                   const QuantizeOptions& options);

}  // namespace ge::quantize
