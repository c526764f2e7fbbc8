// What a model binds its layers from: a checkpoint's named tensors plus how its layers are quantized.
// A model asks for a Linear, an Embedding or a norm by its module path and shape and gets it in whatever
// format the checkpoint holds, checked at load; a missing, misshapen or unsupported tensor fails here with
// its name, never later in the forward pass.
#pragma once
#include <map>
#include <optional>
#include <string>

#include "kernels/mlx_quant.h"
#include "nn/linear.h"
#include "tensor/tensor_source.h"

namespace ge::nn {

// MLX's `quantization` dict (config.json): the parameters of every layer that has `<path>.scales`,
// except those the per-layer entries name: a dict of other parameters, or `false` (stays float).
struct QuantizationConfig {
  std::optional<kernels::QuantParams> defaults;
  std::map<std::string, std::optional<kernels::QuantParams>, std::less<>> per_layer;
};

class LayerSource {
 public:
  explicit LayerSource(const TensorSource& tensors, QuantizationConfig quantization = {})
      : tensors_(tensors), quantization_(std::move(quantization)) {}

  const TensorSource& tensors() const { return tensors_; }
  const QuantizationConfig& quantization() const { return quantization_; }
  std::string describe() const { return tensors_.describe(); }
  bool has(const std::string& name) const { return tensors_.find(name) != nullptr; }

  // The [out, in] weight of the Linear or Embedding at module path `path` ("model.layers.0.mlp.up_proj"):
  // `<path>.weight`, with `<path>.scales` (and `.biases`, affine) when the layer is quantized.
  Weight weight(const std::string& path, int64_t out, int64_t in) const;
  Linear linear(const std::string& path, int64_t out, int64_t in) const;
  // `stack` matrices of [out, in] stored as one [stack, out, in] tensor (a MoE's experts), as one weight of
  // stack * out rows (row_slice takes one out): the tensor `path` itself (Gemma 4's checkpoints and GGUF
  // files name it so), else `<path>.weight`, MLX-quantized with `.scales` / `.biases` of [stack, out, groups]
  // when the layer is (mlx-lm's SwitchLinear).
  Weight stacked_weight(const std::string& path, int64_t stack, int64_t out, int64_t in) const;
  // A Linear over a float weight [out, in_shape...] read as [out, prod(in_shape)] (+ `<path>.bias`): a
  // Conv2d whose stride equals its kernel is this Linear over flattened patches.
  Linear flattened_linear(const std::string& path, int64_t out, const std::vector<int64_t>& in_shape) const;
  Embedding embedding(const std::string& path, int64_t num_embeddings, int64_t dim) const;
  // A float vector (a norm's weight, a bias) of n values, by tensor name.
  Tensor vector(const std::string& name, int64_t n) const;
  RMSNorm rms_norm(const std::string& path, int64_t n, float eps, bool one_plus) const;
  LayerNorm layer_norm(const std::string& path, int64_t n, float eps) const;

  // How the layer at `path` is quantized by the rule mlx-lm loads with: its per-layer entry if any, else
  // the top-level parameters if `<path>.scales` exists, else not at all.
  std::optional<kernels::QuantParams> quantization_of(const std::string& path) const;
  // How the tensor `t` of this source is quantized: for an MLX-packed `<path>.weight`, its layer's
  // parameters; nullopt for any other tensor.
  std::optional<kernels::QuantParams> quantization_of_tensor(const Tensor& t) const;
  // The parameters `t` holds: 32 / bits per U32 of an MLX-packed weight, none in its scales and biases.
  int64_t parameter_count(const Tensor& t) const;

 private:
  const Tensor& must(const std::string& name) const;
  // `stack` > 0: [stack, out, ...] tensors read as stack * out rows.
  kernels::QuantizedMatrix quantized(const std::string& path, const kernels::QuantParams& p, int64_t out,
                                     int64_t in, int64_t stack = 0) const;
  // The float or ggml-block tensor `name` of `shape`, as a matrix of its last dim's columns.
  Tensor stored_weight(const std::string& name, const std::vector<int64_t>& shape) const;

  const TensorSource& tensors_;
  QuantizationConfig quantization_;
};

}  // namespace ge::nn
