// GGUF (ggml's single-file model format, spec version 3, little-endian): typed metadata, then tensor
// infos, then aligned tensor data. The writer streams tensors one at a time so a converter never holds a
// whole model; the reader checks every claim the file makes before handing out a tensor, so a broken
// file fails at load with its name and the problem, not later as a crash.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "formats/mapped_file.h"
#include "tensor/tensor_source.h"

namespace ge::formats {

// Metadata value type ids, as stored in the file.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// One metadata value: a scalar, a string, or an array of one of those (the spec allows arrays of
// arrays, but neither ggml nor any model key uses them, so they are rejected).
using GgufValue =
    std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, uint64_t, int64_t, float, double,
                 bool, std::string, std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                 std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>, std::vector<uint64_t>,
                 std::vector<int64_t>, std::vector<float>, std::vector<double>, std::vector<bool>,
                 std::vector<std::string>>;

// The type a value has in a file, e.g. "UINT32" or "ARRAY of STRING", for messages.
std::string gguf_type_name(const GgufValue& v);

// Key -> value in insertion (file) order; keys are unique.
class GgufMetadata {
 public:
  // `origin` prefixes error messages (the file path, for a reader).
  explicit GgufMetadata(std::string origin = "GGUF metadata") : origin_(std::move(origin)) {}

  void add(std::string key, GgufValue value);          // throws std::invalid_argument on a duplicate key
  const GgufValue* value(std::string_view key) const;  // nullptr when absent
  const std::vector<std::pair<std::string, GgufValue>>& entries() const { return entries_; }

  // nullopt when absent; throws std::runtime_error when present with another type, because a key of the
  // wrong type means the file is not what the caller thinks, not that the key is missing.
  template <class T>
  std::optional<T> find(std::string_view key) const {
    const GgufValue* v = value(key);
    if (!v) return std::nullopt;
    return checked<T>(key, *v);
  }
  // Throws std::runtime_error when absent or of another type.
  template <class T>
  const T& get(std::string_view key) const {
    const GgufValue* v = value(key);
    if (!v) throw std::runtime_error(origin_ + ": metadata key '" + std::string(key) + "' is missing");
    return checked<T>(key, *v);
  }
  uint32_t get_u32(std::string_view key) const { return get<uint32_t>(key); }
  int32_t get_i32(std::string_view key) const { return get<int32_t>(key); }
  uint64_t get_u64(std::string_view key) const { return get<uint64_t>(key); }
  float get_f32(std::string_view key) const { return get<float>(key); }
  bool get_bool(std::string_view key) const { return get<bool>(key); }
  const std::string& get_string(std::string_view key) const { return get<std::string>(key); }
  template <class T>
  const std::vector<T>& get_array(std::string_view key) const {
    return get<std::vector<T>>(key);
  }

 private:
  template <class T>
  const T& checked(std::string_view key, const GgufValue& v) const {
    if (const T* p = std::get_if<T>(&v)) return *p;
    throw std::runtime_error(origin_ + ": metadata key '" + std::string(key) + "' is " + gguf_type_name(v) +
                             ", not " + gguf_type_name(GgufValue(std::in_place_type<T>)));
  }

  std::string origin_;
  std::vector<std::pair<std::string, GgufValue>> entries_;
  std::map<std::string, size_t, std::less<>> index_;
};

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr std::string_view kGgufAlignmentKey = "general.alignment";

class GgufWriter {
 public:
  // Writes exactly the declared bytes of tensor `index` (in add_tensor order) to `out`.
  using TensorWriter = std::function<void(size_t index, std::ostream& out)>;

  // Metadata, written in this order. "general.alignment" (a uint32_t power of two) sets the alignment.
  void add(std::string key, GgufValue value) { metadata_.add(std::move(key), std::move(value)); }
  // Declares a tensor; shape is outermost-first (our convention). Returns its index for the callback.
  // Throws std::invalid_argument for a duplicate name, a dtype GGUF cannot store, or a shape whose
  // innermost dim is not a whole number of blocks.
  size_t add_tensor(std::string name, DType dtype, std::vector<int64_t> shape);
  size_t tensor_nbytes(size_t index) const { return tensors_.at(index).nbytes; }

  // Writes path + ".tmp", then renames it to path, so a reader never sees a half-written file. On any
  // exception (including one from `write_tensor`) the temp file is removed and the exception rethrown.
  void write(const std::filesystem::path& path, const TensorWriter& write_tensor) const;

 private:
  struct Decl {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t nbytes;
  };
  uint32_t alignment() const;
  void write_stream(std::ostream& out, const std::filesystem::path& path,
                    const TensorWriter& write_tensor) const;

  GgufMetadata metadata_{"GgufWriter"};
  std::vector<Decl> tensors_;
};

// A GGUF file, memory-mapped; tensors point into the map and live as long as this object.
class GgufFile final : public TensorSource {
 public:
  // populate: map all weight pages at load (see MappedFile); leave it off to read the metadata only.
  // Throws std::runtime_error naming the file.
  explicit GgufFile(const std::filesystem::path& path, bool populate = false);

  uint32_t version() const { return version_; }
  const GgufMetadata& metadata() const { return metadata_; }
  uint32_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }  // from the start of the file
  // Where a tensor of this file starts, from the start of the file.
  size_t file_offset(const Tensor& t) const { return static_cast<size_t>(t.data - file_.bytes().data()); }
  const std::filesystem::path& path() const { return file_.path(); }

  const Tensor* find(std::string_view name) const override;
  std::vector<const Tensor*> all() const override;  // in file order
  std::string describe() const override { return path().string(); }
  void release(const std::byte* data, size_t n) const override;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  GgufMetadata metadata_;
  uint32_t alignment_ = kGgufDefaultAlignment;
  size_t data_offset_ = 0;
  std::vector<Tensor> tensors_;
  std::map<std::string, const Tensor*, std::less<>> by_name_;
};

}  // namespace ge::formats
