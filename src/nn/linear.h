// The layers a model is built from, each owning its weights in whatever format the checkpoint stores
// them (plain floats, a GGUF block type, an MLX-quantized matrix with its scales and biases), so that a
// model's forward pass never sees a format: mlx.nn's Linear / QuantizedLinear, Embedding /
// QuantizedEmbedding and RMSNorm, over the format-specific kernels.
#pragma once
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/mlx_quant.h"
#include "kernels/thread_pool.h"
#include "tensor/tensor.h"

namespace ge::nn {

// A [out, in] matrix as stored: a Tensor (F32/F16/BF16/Q8_0/Q4_0) or an MLX-quantized matrix.
using Weight = std::variant<Tensor, kernels::QuantizedMatrix>;

int64_t weight_rows(const Weight& w);
int64_t weight_cols(const Weight& w);
std::string weight_format(const Weight& w);  // "BF16", "Q8_0", "affine 4-bit g64", ...
// Bytes of the weight and, for MLX formats, its scales and biases: what one full pass reads.
size_t weight_bytes(const Weight& w);
// Rows [begin, begin + count) of the weight, in place (one expert of a stacked weight, the gate half of a
// fused gate_up).
Weight row_slice(const Weight& w, int64_t begin, int64_t count);
// Where those bytes are: the tensor's data, or the codes, scales and biases of an MLX matrix.
std::vector<std::span<const std::byte>> weight_ranges(const Weight& w);

class Linear;
// The formats of `layers`' weights, most frequent first and joined by '+' when they differ: a
// llama-quantize mix such as Q4_K_M of the 270M reads "Q5_0+Q8_0+Q4_K+Q6_K".
std::string formats_summary(const std::vector<const Linear*>& layers);

// y = x W^T (+ b).
class Linear {
 public:
  Linear() = default;
  explicit Linear(Weight weight, const Tensor* bias = nullptr);

  int64_t in_features() const { return weight_cols(weight_); }
  int64_t out_features() const { return weight_rows(weight_); }
  const Weight& weight() const { return weight_; }

  // y[n, out] for x[n, in], both row-major.
  void operator()(kernels::ThreadPool& pool, const float* x, int64_t n, float* y,
                  kernels::Precision precision = kernels::Precision::kExact) const;

  // Readies the layer for kReducedActivations: a quantized weight (MLX or a ggml block type) that the
  // integer kernels take is repacked once (kernels::RepackedMatrix); until then, and for every other weight,
  // the product is the exact one or the weight format's own reduced kernel. Without `keep_reading_original`,
  // reduced products read only the repacked copy (never the weight's own kernel), so that the stored weight
  // can leave memory; returns whether that holds (the weight was repacked).
  bool prepare_reduced_activations(bool keep_reading_original = true);

  // The same layer with its weight quantized to `block` (Q8_0 or Q4_0) in memory it owns, for a float
  // weight (F32/F16/BF16); the layer itself for any other weight.
  Linear quantized_copy(DType block) const;

 private:
  Weight weight_;
  std::shared_ptr<const std::vector<std::byte>> owned_;  // quantized_copy's blocks
  std::vector<float> bias_;  // widened once: biases are a few thousand values
  std::shared_ptr<const kernels::RepackedMatrix> repacked_;  // shared by copies (the tied head)
  bool repacked_only_ = false;  // reduced products never read weight_
};

// A [num_embeddings, dim] table read one row per token; as_linear() is the tied LM head over the same
// stored table (for an MLX-quantized table, the same codes, scales and biases).
class Embedding {
 public:
  Embedding() = default;
  explicit Embedding(Weight table) : table_(std::move(table)) {}

  int64_t num_embeddings() const { return table_.out_features(); }
  int64_t dim() const { return table_.in_features(); }
  // out[dim] = table[id] * scale.
  void lookup(int32_t id, float scale, float* out) const;
  const Linear& as_linear() const { return table_; }

 private:
  Linear table_;
};

// x / sqrt(mean(x^2) + eps) * g over rows of the weight's length, g = 1 + w (Gemma's parameterisation, as
// the Hugging Face checkpoints store it) or g = w (GGUF files store 1 + w already).
class RMSNorm {
 public:
  RMSNorm() = default;
  RMSNorm(Tensor weight, float eps, bool one_plus)
      : weight_(std::move(weight)), size_(weight_.numel()), eps_(eps), one_plus_(one_plus) {}
  // A norm without a weight (Gemma 3n's v_norm: transformers' with_scale=False) over rows of `size`.
  static RMSNorm unscaled(int64_t size, float eps);

  void operator()(const float* x, int64_t rows, float* out) const;

 private:
  Tensor weight_;
  int64_t size_ = 0;
  float eps_ = 1e-6f;
  bool one_plus_ = true;
};

// (x - mean) / sqrt(var + eps) * w + b over rows of the weight's length (torch.nn.LayerNorm).
class LayerNorm {
 public:
  LayerNorm() = default;
  LayerNorm(Tensor weight, Tensor bias, float eps) : weight_(std::move(weight)), bias_(std::move(bias)), eps_(eps) {}

  void operator()(const float* x, int64_t rows, float* out) const;

 private:
  Tensor weight_, bias_;
  float eps_ = 1e-6f;
};

}  // namespace ge::nn
