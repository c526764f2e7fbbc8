// How a checkpoint's layers are quantized, from config.json as mlx-lm writes and reads it
// (../shared/MLX_QUANT.md section 3): the "quantization" dict (or its copy "quantization_config"), with
// group_size / bits / mode (no mode = affine, as before mlx-lm 0.27) and per-layer entries keyed by
// module path: a dict of other parameters (missing ones take that mode's defaults, as to_quantized does),
// `true` (the top-level parameters) or `false` (left in float).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "nn/layer_source.h"

namespace ge::models {

// An unquantized config gives an empty QuantizationConfig. Unknown modes, bad bits or group sizes, and
// non-MLX quantization methods (gptq, awq, ...) fail naming the source and key.
nn::QuantizationConfig read_quantization_config(const nlohmann::json& config, const std::string& source);

}  // namespace ge::models
