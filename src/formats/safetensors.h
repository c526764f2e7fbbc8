// safetensors checkpoints: one file or several shards listed in model.safetensors.index.json.
// Every claim a file makes (header length, offsets, shapes, dtypes) is checked against the bytes on disk
// before a tensor is handed out, so a lying file fails at load with its name, not later as a crash.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/mapped_file.h"
#include "tensor/tensor_source.h"

namespace ge::formats {

class SafetensorsFile {
 public:
  SafetensorsFile(const std::filesystem::path& path, bool populate);
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::vector<Tensor> tensors_;
};

// All tensors of a Hugging Face checkpoint folder (model.safetensors, or the shards of its index).
class SafetensorsCheckpoint final : public TensorSource {
 public:
  // populate: map all weight pages at load (see MappedFile); leave it off to read headers only.
  explicit SafetensorsCheckpoint(const std::filesystem::path& dir, bool populate = false);
  const Tensor* find(std::string_view name) const override;
  std::vector<const Tensor*> all() const override;
  std::string describe() const override { return dir_.string(); }
  void release(const std::byte* data, size_t n) const override;

 private:
  void add_file(const std::filesystem::path& path, bool populate);

  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const Tensor*, std::less<>> by_name_;
};

}  // namespace ge::formats
