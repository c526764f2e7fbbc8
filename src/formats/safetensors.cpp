#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "formats/json_file.h"

namespace ge::formats {

namespace {

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

// What a header may claim (the Hugging Face safetensors crate's header limit; Gemma's tensors have at most
// 4 dimensions, MLX's stacked experts 3).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxRank = 8;

std::vector<int64_t> parse_shape(const nlohmann::json& j, const std::filesystem::path& path,
                                 const std::string& name) {
  if (!j.is_array()) fail(path, "tensor '" + name + "': shape is not an array");
  if (j.size() > kMaxRank)
    fail(path, "tensor '" + name + "': " + std::to_string(j.size()) + " dimensions (at most " +
                   std::to_string(kMaxRank) + ")");
  std::vector<int64_t> shape;
  int64_t elements = 1;
  for (const auto& d : j) {
    if (!d.is_number_unsigned()) fail(path, "tensor '" + name + "': shape has a non-integer or negative dim");
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(elements, static_cast<int64_t>(dim), &elements))
      fail(path, "tensor '" + name + "': shape has more elements than a 64-bit count holds");
    shape.push_back(static_cast<int64_t>(dim));
  }
  return shape;
}

Tensor parse_entry(const std::string& name, const nlohmann::json& entry, std::span<const std::byte> data,
                   const std::filesystem::path& path) {
  if (!entry.is_object()) fail(path, "tensor '" + name + "': header entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) fail(path, "tensor '" + name + "': missing dtype");
  if (shape_it == entry.end()) fail(path, "tensor '" + name + "': missing shape");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
    fail(path, "tensor '" + name + "': data_offsets must be [begin, end]");

  Tensor t;
  t.name = name;
  auto dtype = dtype_from_safetensors(dtype_it->get<std::string>());
  if (!dtype) fail(path, "tensor '" + name + "': unsupported dtype " + dtype_it->get<std::string>());
  t.dtype = *dtype;
  t.shape = parse_shape(*shape_it, path, name);
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end || end > data.size())
    fail(path, "tensor '" + name + "': data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                   "] outside the " + std::to_string(data.size()) + "-byte data section");
  const auto expected = dtype_bytes(t.dtype, t.numel());
  if (!expected || *expected != end - begin)
    fail(path, "tensor '" + name + "': shape " + shape_string(t.shape) + " of " +
                   std::string(dtype_info(t.dtype).name) + " needs " +
                   (expected ? std::to_string(*expected) : std::string("?")) + " bytes but data_offsets span " +
                   std::to_string(end - begin));
  t.data = data.data() + begin;
  t.nbytes = end - begin;
  return t;
}

// A shard is a file of the checkpoint's own folder: an index must not make us read /etc/passwd or ../other.
bool is_file_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\\\0", 3)) == std::string_view::npos;
}

void check_no_overlap(std::vector<Tensor>& tensors, const std::filesystem::path& path) {
  std::sort(tensors.begin(), tensors.end(), [](const Tensor& a, const Tensor& b) { return a.data < b.data; });
  for (size_t i = 1; i < tensors.size(); ++i) {
    const Tensor& prev = tensors[i - 1];
    if (tensors[i].data < prev.data + prev.nbytes)
      fail(path, "tensors '" + prev.name + "' and '" + tensors[i].name + "' overlap");
  }
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path, bool populate) : file_(path, populate) {
  const auto bytes = file_.bytes();
  if (bytes.size() < 8) fail(path, "file too short for a safetensors header (" + std::to_string(bytes.size()) + " bytes)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian, as are all supported hosts
  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " is more than the " +
                   std::to_string(kMaxHeaderBytes) + " bytes a safetensors header may take");
  if (header_len > bytes.size() - 8)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(bytes.size()) + " bytes)");
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) fail(path, "header is not a valid JSON object");

  const auto data = bytes.subspan(8 + header_len);
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    tensors_.push_back(parse_entry(name, entry, data, path));
  }
  check_no_overlap(tensors_, path);
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::filesystem::path& dir, bool populate) : dir_(dir) {
  const auto index = dir / "model.safetensors.index.json";
  const auto single = dir / "model.safetensors";
  if (std::filesystem::exists(index)) {
    nlohmann::json j = read_json_file(index);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, "weight_map: missing or not an object");
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) fail(index, "weight_map: '" + name + "' does not name a file");
      const std::string& shard = file.get_ref<const std::string&>();
      if (!is_file_name(shard))
        fail(index, "weight_map: '" + name + "' names '" + shard + "', which is not a file name in this folder");
      shards.insert(shard);
    }
    for (const auto& shard : shards) add_file(dir / shard, populate);
    for (const auto& [name, file] : j["weight_map"].items())
      if (!by_name_.count(name)) fail(dir / file.get<std::string>(), "tensor '" + name + "' listed in the index is missing");
  } else if (std::filesystem::exists(single)) {
    add_file(single, populate);
  } else {
    fail(dir, "no model.safetensors or model.safetensors.index.json");
  }
}

void SafetensorsCheckpoint::add_file(const std::filesystem::path& path, bool populate) {
  files_.push_back(std::make_unique<SafetensorsFile>(path, populate));
  for (const Tensor& t : files_.back()->tensors()) {
    if (!by_name_.emplace(t.name, &t).second) fail(path, "tensor '" + t.name + "' appears in two shards");
  }
}

void SafetensorsCheckpoint::release(const std::byte* data, size_t n) const {
  release_pages(data, n);
}

const Tensor* SafetensorsCheckpoint::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const Tensor*> SafetensorsCheckpoint::all() const {
  std::vector<const Tensor*> out;
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

}  // namespace ge::formats
