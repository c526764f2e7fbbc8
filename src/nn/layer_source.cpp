#include "nn/layer_source.h"

#include <stdexcept>

namespace ge::nn {

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace

const Tensor& LayerSource::must(const std::string& name) const {
  const Tensor* t = tensors_.find(name);
  if (!t) throw std::runtime_error(describe() + ": missing tensor '" + name + "'");
  return *t;
}

std::optional<kernels::QuantParams> LayerSource::quantization_of(const std::string& path) const {
  if (auto it = quantization_.per_layer.find(path); it != quantization_.per_layer.end()) return it->second;
  if (!has(path + ".scales")) return std::nullopt;
  if (!quantization_.defaults)
    throw std::runtime_error(describe() + ": tensor '" + path +
                             ".scales' but config.json has no \"quantization\" to say how it is quantized");
  return quantization_.defaults;
}

std::optional<kernels::QuantParams> LayerSource::quantization_of_tensor(const Tensor& t) const {
  constexpr std::string_view kWeight = ".weight";
  if (t.dtype != DType::U32 || !t.name.ends_with(kWeight)) return std::nullopt;
  return quantization_of(t.name.substr(0, t.name.size() - kWeight.size()));
}

int64_t LayerSource::parameter_count(const Tensor& t) const {
  if (t.name.ends_with(".scales") || t.name.ends_with(".biases")) return 0;
  if (const auto q = quantization_of_tensor(t)) return t.numel() * 32 / q->bits;
  return t.numel();
}

kernels::QuantizedMatrix LayerSource::quantized(const std::string& path, const kernels::QuantParams& p,
                                                int64_t out, int64_t in, int64_t stack) const {
  const std::string what = describe() + ": tensor '" + path;
  if (const std::string error = kernels::quant_params_error(p); !error.empty())
    throw std::runtime_error(what + "': " + error);
  if (in % p.group_size != 0)
    throw std::runtime_error(what + ".weight': " + std::to_string(in) + " columns are not whole groups of " +
                             std::to_string(p.group_size) + " (" + kernels::describe(p) + ")");
  const auto expect = [&](const std::string& suffix, const Tensor& t, std::vector<int64_t> shape, bool ok_dtype,
                          const char* dtypes) {
    if (stack > 0) shape.insert(shape.begin(), stack);
    if (t.shape != shape)
      throw std::runtime_error(what + suffix + "' has shape " + shape_string(t.shape) + ", but a " +
                               kernels::describe(p) + " [" + std::to_string(out) + ", " + std::to_string(in) +
                               "] matrix needs " + shape_string(shape));
    if (!ok_dtype)
      throw std::runtime_error(what + suffix + "' has dtype " + std::string(dtype_info(t.dtype).name) +
                               ", expected " + dtypes + " for " + kernels::describe(p));
  };
  const Tensor& w = must(path + ".weight");
  const Tensor& scales = must(path + ".scales");
  expect(".weight", w, {out, in * p.bits / 32}, w.dtype == DType::U32, "U32");
  const bool affine = p.mode == kernels::QuantMode::kAffine;
  expect(".scales", scales, {out, in / p.group_size}, affine ? is_float(scales.dtype) : scales.dtype == DType::U8,
         affine ? "F32, F16 or BF16" : "U8 (or F8_E4M3 / F8_E8M0)");
  kernels::QuantizedMatrix m{path, p, std::max<int64_t>(stack, 1) * out, in, w.data, scales.data, nullptr, scales.dtype};
  if (affine) {
    const Tensor& biases = must(path + ".biases");
    expect(".biases", biases, {out, in / p.group_size}, biases.dtype == scales.dtype, "the scales' dtype");
    m.biases = biases.data;
  }
  return m;
}

Tensor LayerSource::stored_weight(const std::string& name, const std::vector<int64_t>& shape) const {
  const Tensor& t = must(name);
  if (t.shape != shape)
    throw std::runtime_error(describe() + ": tensor '" + name + "' has shape " + shape_string(t.shape) +
                             ", expected " + shape_string(shape));
  if (!is_float(t.dtype) && !is_ggml_block(t.dtype))
    throw std::runtime_error(describe() + ": tensor '" + name + "' has unsupported dtype " +
                             std::string(dtype_info(t.dtype).name));
  Tensor matrix = t;
  matrix.shape = {t.numel() / shape.back(), shape.back()};
  return matrix;
}

Weight LayerSource::weight(const std::string& path, int64_t out, int64_t in) const {
  if (const auto p = quantization_of(path)) return quantized(path, *p, out, in);
  return stored_weight(path + ".weight", {out, in});
}

Weight LayerSource::stacked_weight(const std::string& path, int64_t stack, int64_t out, int64_t in) const {
  if (has(path)) return stored_weight(path, {stack, out, in});
  if (const auto p = quantization_of(path)) return quantized(path, *p, out, in, stack);
  return stored_weight(path + ".weight", {stack, out, in});
}

Linear LayerSource::linear(const std::string& path, int64_t out, int64_t in) const {
  if (!has(path + ".bias")) return Linear(weight(path, out, in));
  const Tensor bias = vector(path + ".bias", out);
  return Linear(weight(path, out, in), &bias);
}

Linear LayerSource::flattened_linear(const std::string& path, int64_t out,
                                     const std::vector<int64_t>& in_shape) const {
  const std::string name = path + ".weight";
  Tensor t = must(name);
  std::vector<int64_t> shape{out};
  shape.insert(shape.end(), in_shape.begin(), in_shape.end());
  if (t.shape != shape)
    throw std::runtime_error(describe() + ": tensor '" + name + "' has shape " + shape_string(t.shape) +
                             ", expected " + shape_string(shape));
  if (!is_float(t.dtype))
    throw std::runtime_error(describe() + ": tensor '" + name + "' has unsupported dtype " +
                             std::string(dtype_info(t.dtype).name));
  t.shape = {out, t.numel() / out};
  if (!has(path + ".bias")) return Linear(t);
  const Tensor bias = vector(path + ".bias", out);
  return Linear(t, &bias);
}

Embedding LayerSource::embedding(const std::string& path, int64_t num_embeddings, int64_t dim) const {
  return Embedding(weight(path, num_embeddings, dim));
}

Tensor LayerSource::vector(const std::string& name, int64_t n) const {
  const Tensor& t = must(name);
  if (t.shape != std::vector<int64_t>{n})
    throw std::runtime_error(describe() + ": tensor '" + name + "' has shape " + shape_string(t.shape) +
                             ", expected " + shape_string({n}));
  if (!is_float(t.dtype))
    throw std::runtime_error(describe() + ": tensor '" + name + "' has unsupported dtype " +
                             std::string(dtype_info(t.dtype).name));
  return t;
}

RMSNorm LayerSource::rms_norm(const std::string& path, int64_t n, float eps, bool one_plus) const {
  return RMSNorm(vector(path + ".weight", n), eps, one_plus);
}

LayerNorm LayerSource::layer_norm(const std::string& path, int64_t n, float eps) const {
  return LayerNorm(vector(path + ".weight", n), vector(path + ".bias", n), eps);
}

}  // namespace ge::nn
