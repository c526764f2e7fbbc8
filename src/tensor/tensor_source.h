// What a model sees of a checkpoint: tensors by name, whatever file format they came from.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace ge {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const Tensor* find(std::string_view name) const = 0;  // nullptr when absent
  virtual std::vector<const Tensor*> all() const = 0;           // in a stable order
  virtual std::string describe() const = 0;                     // e.g. the checkpoint path, for messages
  // A hint that `n` bytes of its tensors from `data` on will not be read for a while: a file mapping drops
  // them from memory (a later read brings them back from the file). Sources in memory keep them.
  virtual void release(const std::byte* data, size_t n) const { (void)data, (void)n; }
};

}  // namespace ge
