#include "convert/source_tensors.h"

#include "models/quantization_config.h"
#include "nn/layer_source.h"

namespace ge::convert {

SourceTensors::SourceTensors(const formats::SafetensorsCheckpoint& file, const nlohmann::json& config,
                             const std::string& config_file)
    : file_(file) {
  const nn::LayerSource layers(file, models::read_quantization_config(config, config_file));
  for (const Tensor* t : file.all()) {
    const auto params = layers.quantization_of_tensor(*t);
    if (!params || t->shape.size() != 2) continue;
    const std::string path = t->name.substr(0, t->name.size() - 7);  // less ".weight"
    const int64_t out = t->shape[0], in = t->shape[1] * 32 / params->bits;
    const auto matrix = std::get<kernels::QuantizedMatrix>(layers.weight(path, out, in));
    const DType shown = matrix.scale_dtype == DType::U8 ? DType::BF16 : matrix.scale_dtype;
    dequantized_[t->name] = Tensor{t->name, shown, {out, in}, nullptr, *dtype_bytes(shown, out * in)};
    matrices_[t->name] = matrix;
    hidden_.insert(path + ".scales");
    hidden_.insert(path + ".biases");
  }
}

const Tensor* SourceTensors::find(std::string_view name) const {
  if (const auto it = dequantized_.find(name); it != dequantized_.end()) return &it->second;
  return hidden_.count(name) ? nullptr : file_.find(name);
}

std::vector<const Tensor*> SourceTensors::all() const {
  std::vector<const Tensor*> out;
  for (const Tensor* t : file_.all())
    if (const Tensor* shown = find(t->name)) out.push_back(shown);
  return out;
}

const kernels::QuantizedMatrix* SourceTensors::quantized(const Tensor& t) const {
  const auto it = matrices_.find(t.name);
  return it != matrices_.end() && t.data == nullptr ? &it->second : nullptr;
}

}  // namespace ge::convert
