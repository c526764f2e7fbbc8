// A named, typed view of weight bytes that live elsewhere (an mmapped file, usually).
// Shapes are outermost-first, as in PyTorch: a Linear weight is [out_features, in_features].
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace ge {

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t rows() const { return shape.empty() ? 1 : numel() / shape.back(); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  // Bytes of one row (innermost dimension); rows of block-quantized tensors are whole blocks.
  size_t row_bytes() const { return rows() == 0 ? 0 : nbytes / static_cast<size_t>(rows()); }
  const std::byte* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes(); }
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace ge
