// MLX-quantized copies of a checkpoint's weights for the model tests, made with the project's exact MLX
// quantizer (itself tested against an independent packer in mlx_quant_test.cpp).
#pragma once
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/mlx_quant.h"
#include "kernels/ops.h"
#include "tensor/tensor_source.h"

namespace ge::test {

using kernels::QuantMode;
using kernels::QuantParams;

// A fixture's tensors with the chosen weights replaced, owning the new bytes: either by MLX's tensors
// (`.weight` codes, `.scales`, `.biases`) or, for the reference, by their dequantized f32 values. A 3-D
// weight [stack, out, in] (a MoE's experts, mlx-lm's SwitchLinear) is quantized row by row alike, its scales
// and biases [stack, out, groups].
class QuantizedCopy final : public TensorSource {
 public:
  // params_of(path) says how the layer at `path` is quantized (nullopt: kept as it is).
  using ParamsOf = std::function<std::optional<QuantParams>(const std::string&)>;
  QuantizedCopy(const TensorSource& src, const ParamsOf& params_of, bool dequantized)
      : src_(src) {
    for (const Tensor* t : src.all()) {
      if ((t->shape.size() != 2 && t->shape.size() != 3) || !t->name.ends_with(".weight")) continue;
      const std::string path = t->name.substr(0, t->name.size() - 7);
      // As mlx-lm does, a matrix whose rows are not whole groups stays float.
      if (const auto p = params_of(path); p && t->cols() % p->group_size == 0) add(*t, path, *p, dequantized);
    }
  }

  const Tensor* find(std::string_view name) const override {
    if (const auto it = tensors_.find(name); it != tensors_.end()) return &it->second;
    return src_.find(name);
  }
  std::vector<const Tensor*> all() const override { return src_.all(); }
  std::string describe() const override { return src_.describe() + " (MLX-quantized copy)"; }

 private:
  std::byte* store(size_t bytes) { return storage_.emplace_back(bytes).data(); }

  void put(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::byte* data, size_t bytes) {
    tensors_[name] = Tensor{name, dtype, std::move(shape), data, bytes};
  }

  void add(const Tensor& t, const std::string& path, const QuantParams& p, bool dequantized) {
    const int64_t rows = t.rows(), cols = t.cols();
    // The stored shape but its last dim: [out] or [stack, out].
    const std::vector<int64_t> lead(t.shape.begin(), t.shape.end() - 1);
    const auto shaped = [&](int64_t last) {
      std::vector<int64_t> shape = lead;
      shape.push_back(last);
      return shape;
    };
    kernels::QuantizedMatrix m{path, p, rows, cols, nullptr, nullptr, nullptr,
                               p.mode == QuantMode::kAffine ? t.dtype : DType::U8};
    std::byte* codes = store(rows * m.code_row_bytes());
    std::byte* scales = store(rows * m.scale_row_bytes());
    std::byte* biases = kernels::has_biases(p) ? store(rows * m.scale_row_bytes()) : nullptr;
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      kernels::dequantize_row(t, r, 1.0f, row.data());
      kernels::quantize_row(p, row.data(), cols, t.dtype, codes + r * m.code_row_bytes(),
                            scales + r * m.scale_row_bytes(), biases ? biases + r * m.scale_row_bytes() : nullptr);
    }
    m.codes = codes;
    m.scales = scales;
    m.biases = biases;
    if (dequantized) {
      auto* values = reinterpret_cast<float*>(store(static_cast<size_t>(rows * cols) * 4));
      for (int64_t r = 0; r < rows; ++r) kernels::dequantize_row(m, r, values + r * cols);
      put(path + ".weight", DType::F32, shaped(cols), reinterpret_cast<std::byte*>(values), rows * cols * 4);
      return;
    }
    put(path + ".weight", DType::U32, shaped(cols * p.bits / 32), codes, rows * m.code_row_bytes());
    put(path + ".scales", m.scale_dtype, shaped(m.groups()), scales, rows * m.scale_row_bytes());
    if (biases) put(path + ".biases", m.scale_dtype, shaped(m.groups()), biases, rows * m.scale_row_bytes());
  }

  const TensorSource& src_;
  std::deque<std::vector<std::byte>> storage_;
  std::map<std::string, Tensor, std::less<>> tensors_;
};

}  // namespace ge::test
