#include "formats/safetensors_writer.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/atomic_output.h"
#include "tensor/tensor.h"

namespace ge::formats {
namespace {

bool storable(DType t) {
  return dtype_info(t).block_elems == 1;  // safetensors has no block-quantized types
}

}  // namespace

size_t SafetensorsWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> shape) {
  if (name == "__metadata__") throw std::invalid_argument("safetensors: '__metadata__' is not a tensor name");
  if (!storable(dtype))
    throw std::invalid_argument("safetensors: tensor '" + name + "': dtype " +
                                std::string(dtype_info(dtype).name) + " cannot be stored");
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw std::invalid_argument("safetensors: tensor '" + name + "': negative dim in " +
                                  shape_string(shape));
    numel *= d;
  }
  for (const Decl& t : tensors_)
    if (t.name == name) throw std::invalid_argument("safetensors: tensor '" + name + "' declared twice");
  tensors_.push_back(Decl{std::move(name), dtype, std::move(shape), *dtype_bytes(dtype, numel)});
  return tensors_.size() - 1;
}

uint64_t SafetensorsWriter::data_bytes() const {
  uint64_t total = 0;
  for (const Decl& t : tensors_) total += t.nbytes;
  return total;
}

std::string SafetensorsWriter::header() const {
  nlohmann::json j = nlohmann::json::object();
  if (!metadata_.empty()) j["__metadata__"] = metadata_;
  // Empty tensors point at the end of the data section rather than at the next tensor's first byte, so
  // no reader can take a zero-length range for an overlap with its neighbour.
  const uint64_t end = data_bytes();
  uint64_t offset = 0;
  for (const Decl& t : tensors_) {
    const uint64_t begin = t.nbytes == 0 ? end : offset;
    j[t.name] = {{"dtype", std::string(dtype_info(t.dtype).name)},
                 {"shape", t.shape},
                 {"data_offsets", {begin, begin + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = j.dump();
  // The spec allows trailing spaces in the header; they put the data section on an 8-byte boundary.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void SafetensorsWriter::write(const std::filesystem::path& path, const TensorWriter& write_tensor) const {
  write_atomically(path, [&](std::ostream& out) { write_stream(out, path, write_tensor); });
}

void SafetensorsWriter::write_stream(std::ostream& out, const std::filesystem::path& path,
                                     const TensorWriter& write_tensor) const {
  const std::string text = header();
  const uint64_t n = text.size();
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (8 * i)) & 0xff);  // little-endian
  out.write(length, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    write_declared_bytes(out, path, tensors_[i].name, tensors_[i].nbytes,
                         [&](std::ostream& o) { write_tensor(i, o); });
  }
}

}  // namespace ge::formats
