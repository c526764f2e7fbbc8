// The checkpoint's tensors as the family converters plan them. An MLX-quantized layer (config.json's
// "quantization", mlx-lm's rule) shows its `.weight` as the float [out, in] matrix it stands for, typed as
// the weights it was quantized from (its scales' dtype; bf16 for the fp modes), and dequantized row by row
// only while it is written; its `.scales` and `.biases` are not shown.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "formats/safetensors.h"
#include "kernels/mlx_quant.h"
#include "tensor/tensor_source.h"

namespace ge::convert {

class SourceTensors final : public TensorSource {
 public:
  // config: config.json's contents, read from config_file.
  SourceTensors(const formats::SafetensorsCheckpoint& file, const nlohmann::json& config,
                const std::string& config_file);

  const Tensor* find(std::string_view name) const override;
  std::vector<const Tensor*> all() const override;
  std::string describe() const override { return file_.describe(); }

  // The MLX matrix behind a shown tensor, or nullptr when the tensor's bytes are its values.
  const kernels::QuantizedMatrix* quantized(const Tensor& t) const;

 private:
  const formats::SafetensorsCheckpoint& file_;
  std::map<std::string, Tensor, std::less<>> dequantized_;
  std::map<std::string, kernels::QuantizedMatrix, std::less<>> matrices_;
  std::set<std::string, std::less<>> hidden_;
};

}  // namespace ge::convert
