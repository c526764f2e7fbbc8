// Writing one safetensors file as a stream: the header (string metadata and the table of every tensor's
// dtype, shape and data offsets) is laid out from the declarations first, then the data is written tensor
// by tensor, so a caller can produce a file larger than memory one tensor at a time.
//
// File layout (https://github.com/huggingface/safetensors): u64 little-endian header length N, N bytes of
// JSON padded with spaces to a multiple of 8 (so the data section starts 8-byte aligned), then the data
// section, each tensor's bytes at [begin, end) of its data_offsets.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace ge::formats {

class SafetensorsWriter {
 public:
  // Writes exactly the declared bytes of tensor `index` (in add_tensor order) to `out`.
  using TensorWriter = std::function<void(size_t index, std::ostream& out)>;

  // "__metadata__": string to string, as the format allows (e.g. {"format": "mlx"}).
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  // Declares a tensor; returns its index for the TensorWriter. Throws std::invalid_argument for a duplicate
  // or reserved name, a negative dim, or a dtype safetensors cannot store (the block types).
  size_t add_tensor(std::string name, DType dtype, std::vector<int64_t> shape);

  size_t tensor_count() const { return tensors_.size(); }
  size_t tensor_nbytes(size_t index) const { return tensors_.at(index).nbytes; }
  uint64_t data_bytes() const;  // the sum of all tensors' bytes

  // The JSON header as written (padding included), for tests and the file size.
  std::string header() const;

  // Writes path through path + ".tmp" and a rename (formats::write_atomically). Each tensor's bytes are
  // counted: a TensorWriter that writes more or fewer bytes than declared fails the write, naming the
  // tensor, and no file is left.
  void write(const std::filesystem::path& path, const TensorWriter& write_tensor) const;

 private:
  struct Decl {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t nbytes;
  };
  void write_stream(std::ostream& out, const std::filesystem::path& path,
                    const TensorWriter& write_tensor) const;

  std::map<std::string, std::string> metadata_;
  std::vector<Decl> tensors_;
};

}  // namespace ge::formats
