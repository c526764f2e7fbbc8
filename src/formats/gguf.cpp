#include "formats/gguf.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <limits>
#include <span>
#include <type_traits>

#include "formats/atomic_output.h"

namespace ge::formats {

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kWrittenVersion = 3;
constexpr size_t kMaxDims = 4;        // GGML_MAX_DIMS: ggml cannot represent more
constexpr size_t kMaxNameBytes = 63;  // GGML_MAX_NAME less the NUL: llama.cpp refuses longer tensor names

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};

template <class T>
constexpr GgufType scalar_type() {
  if constexpr (std::is_same_v<T, uint8_t>) return GgufType::U8;
  if constexpr (std::is_same_v<T, int8_t>) return GgufType::I8;
  if constexpr (std::is_same_v<T, uint16_t>) return GgufType::U16;
  if constexpr (std::is_same_v<T, int16_t>) return GgufType::I16;
  if constexpr (std::is_same_v<T, uint32_t>) return GgufType::U32;
  if constexpr (std::is_same_v<T, int32_t>) return GgufType::I32;
  if constexpr (std::is_same_v<T, uint64_t>) return GgufType::U64;
  if constexpr (std::is_same_v<T, int64_t>) return GgufType::I64;
  if constexpr (std::is_same_v<T, float>) return GgufType::F32;
  if constexpr (std::is_same_v<T, double>) return GgufType::F64;
  if constexpr (std::is_same_v<T, bool>) return GgufType::BOOL;
  if constexpr (std::is_same_v<T, std::string>) return GgufType::STRING;
}

std::string type_name(GgufType t) {
  static constexpr std::array<const char*, 13> kNames{"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                                      "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                                      "UINT64", "INT64",   "FLOAT64"};
  return kNames[static_cast<uint32_t>(t)];
}

template <class T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with the C++ type of scalar type id `t`; false when `t` names no scalar type.
template <class F>
bool visit_scalar_type(uint32_t t, F&& f) {
  switch (static_cast<GgufType>(t)) {
    case GgufType::U8:
      f(Tag<uint8_t>{});
      return true;
    case GgufType::I8:
      f(Tag<int8_t>{});
      return true;
    case GgufType::U16:
      f(Tag<uint16_t>{});
      return true;
    case GgufType::I16:
      f(Tag<int16_t>{});
      return true;
    case GgufType::U32:
      f(Tag<uint32_t>{});
      return true;
    case GgufType::I32:
      f(Tag<int32_t>{});
      return true;
    case GgufType::F32:
      f(Tag<float>{});
      return true;
    case GgufType::BOOL:
      f(Tag<bool>{});
      return true;
    case GgufType::STRING:
      f(Tag<std::string>{});
      return true;
    case GgufType::U64:
      f(Tag<uint64_t>{});
      return true;
    case GgufType::I64:
      f(Tag<int64_t>{});
      return true;
    case GgufType::F64:
      f(Tag<double>{});
      return true;
    case GgufType::ARRAY:
      return false;
  }
  return false;
}

// ggml tensor type ids (ggml.h) of the dtypes GGUF and this engine share.
struct GgmlType {
  uint32_t id;
  DType dtype;
};
constexpr std::array<GgmlType, 16> kGgmlTypes{{
    {0, DType::F32},
    {1, DType::F16},
    {2, DType::Q4_0},
    {3, DType::Q4_1},
    {6, DType::Q5_0},
    {7, DType::Q5_1},
    {8, DType::Q8_0},
    {10, DType::Q2_K},
    {11, DType::Q3_K},
    {12, DType::Q4_K},
    {13, DType::Q5_K},
    {14, DType::Q6_K},
    {20, DType::IQ4_NL},
    {23, DType::IQ4_XS},
    {26, DType::I32},
    {30, DType::BF16},
}};

std::optional<uint32_t> ggml_type_of(DType d) {
  for (const GgmlType& g : kGgmlTypes)
    if (g.dtype == d) return g.id;
  return std::nullopt;
}

std::optional<DType> dtype_of_ggml(uint32_t id) {
  for (const GgmlType& g : kGgmlTypes)
    if (g.id == id) return g.dtype;
  return std::nullopt;
}

uint64_t align_up(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

bool is_power_of_two(uint32_t n) {
  return n != 0 && (n & (n - 1)) == 0;
}

// ---- writing (all hosts this engine supports are little-endian, as the format is) ----

template <class T>
void put(std::ostream& out, T v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_string(std::ostream& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

template <class T>
void put_scalar(std::ostream& out, const T& v) {
  if constexpr (std::is_same_v<T, std::string>)
    put_string(out, v);
  else if constexpr (std::is_same_v<T, bool>)
    put<uint8_t>(out, v ? 1 : 0);  // one byte, 0 or 1, whatever sizeof(bool) is
  else
    put<T>(out, v);
}

void put_value(std::ostream& out, const GgufValue& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (IsVector<T>::value) {
          using E = typename T::value_type;
          put<uint32_t>(out, static_cast<uint32_t>(GgufType::ARRAY));
          put<uint32_t>(out, static_cast<uint32_t>(scalar_type<E>()));
          put<uint64_t>(out, v.size());
          for (const auto& e : v) put_scalar<E>(out, e);
        } else {
          put<uint32_t>(out, static_cast<uint32_t>(scalar_type<T>()));
          put_scalar<T>(out, v);
        }
      },
      value);
}

void pad_to(std::ostream& out, uint32_t alignment) {
  const auto pos = static_cast<uint64_t>(out.tellp());
  const std::string zeros(align_up(pos, alignment) - pos, '\0');
  out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
}

// ---- reading ----

// Reads little-endian values from the mapped file; every read is bounds-checked.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::filesystem::path& path) : bytes_(bytes), path_(path) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  [[noreturn]] void fail(const std::string& what) const { formats::fail(path_, what); }

  template <class T>
  T read(const std::string& what) {
    if (sizeof(T) > remaining())
      fail("file ends inside " + what + " (at byte " + std::to_string(pos_) + " of " +
           std::to_string(bytes_.size()) + ")");
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    if (n > remaining())
      fail(what + ": string length " + std::to_string(n) + " runs past the end of the file (" +
           std::to_string(remaining()) + " bytes left)");
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> bytes_;
  const std::filesystem::path& path_;
  size_t pos_ = 0;
};

template <class T>
T read_scalar(Cursor& c, const std::string& what) {
  if constexpr (std::is_same_v<T, std::string>) {
    return c.read_string(what);
  } else if constexpr (std::is_same_v<T, bool>) {
    const uint8_t b = c.read<uint8_t>(what);
    if (b > 1) c.fail(what + ": bool byte " + std::to_string(b) + " is neither 0 nor 1");
    return b == 1;
  } else {
    return c.read<T>(what);
  }
}

template <class T>
std::vector<T> read_array(Cursor& c, uint64_t count, const std::string& what) {
  // Each element takes at least this many bytes, so a count the rest of the file cannot hold is rejected
  // before anything is allocated.
  constexpr size_t min_bytes = std::is_same_v<T, std::string> ? sizeof(uint64_t) : sizeof(T);
  if (count > c.remaining() / min_bytes)
    c.fail(what + ": array count " + std::to_string(count) + " cannot fit in the rest of the file (" +
           std::to_string(c.remaining()) + " bytes)");
  std::vector<T> v;
  v.reserve(count);
  for (uint64_t i = 0; i < count; ++i) v.push_back(read_scalar<T>(c, what));
  return v;
}

GgufValue read_value(Cursor& c, uint32_t type, const std::string& what) {
  GgufValue out;
  if (type == static_cast<uint32_t>(GgufType::ARRAY)) {
    const uint32_t elem = c.read<uint32_t>(what + " element type");
    const uint64_t count = c.read<uint64_t>(what + " element count");
    if (elem == static_cast<uint32_t>(GgufType::ARRAY)) c.fail(what + ": nested arrays are not supported");
    const bool known = visit_scalar_type(elem, [&](auto tag) {
      using T = typename decltype(tag)::type;
      out.emplace<std::vector<T>>(read_array<T>(c, count, what));
    });
    if (!known) c.fail(what + ": unknown array element type " + std::to_string(elem));
    return out;
  }
  const bool known = visit_scalar_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    out.emplace<T>(read_scalar<T>(c, what));
  });
  if (!known) c.fail(what + ": unknown metadata value type " + std::to_string(type));
  return out;
}

struct Header {
  uint32_t version;
  uint64_t tensor_count;
  uint64_t kv_count;
};

// The smallest a metadata entry (key length, type, one-byte value) and a tensor info (name length,
// n_dims, type, offset) can be: counts beyond what the file could hold are rejected up front.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

Header read_header(Cursor& c) {
  const auto magic = c.read<std::array<char, 4>>("the magic");
  if (std::memcmp(magic.data(), kMagic, 4) != 0) c.fail("bad magic: not a GGUF file");
  Header h{};
  h.version = c.read<uint32_t>("the version");
  // Version 2 has the same layout as 3 (which only added big-endian files, told apart by nothing but
  // their byte order); version 1 had 32-bit counts.
  if (h.version != 2 && h.version != 3)
    c.fail("unsupported GGUF version " + std::to_string(h.version) +
           " (this reader handles 2 and 3, little-endian)");
  h.tensor_count = c.read<uint64_t>("the tensor count");
  h.kv_count = c.read<uint64_t>("the metadata count");
  if (h.kv_count > c.remaining() / kMinKvBytes)
    c.fail("metadata count " + std::to_string(h.kv_count) + " cannot fit in the rest of the file (" +
           std::to_string(c.remaining()) + " bytes)");
  if (h.tensor_count > c.remaining() / kMinTensorInfoBytes)
    c.fail("tensor count " + std::to_string(h.tensor_count) + " cannot fit in the rest of the file (" +
           std::to_string(c.remaining()) + " bytes)");
  return h;
}

void read_metadata(Cursor& c, uint64_t count, GgufMetadata& metadata) {
  for (uint64_t i = 0; i < count; ++i) {
    std::string key = c.read_string("metadata key " + std::to_string(i));
    const std::string what = "metadata '" + key + "'";
    if (metadata.value(key)) c.fail("duplicate metadata key '" + key + "'");
    const uint32_t type = c.read<uint32_t>(what + " value type");
    metadata.add(std::move(key), read_value(c, type, what));
  }
}

uint32_t read_alignment(const GgufMetadata& metadata, const std::filesystem::path& path) {
  const auto alignment = metadata.find<uint32_t>(kGgufAlignmentKey);
  if (!alignment) return kGgufDefaultAlignment;
  if (!is_power_of_two(*alignment))
    fail(path, std::string(kGgufAlignmentKey) + " " + std::to_string(*alignment) + " is not a power of two");
  return *alignment;
}

struct TensorInfo {
  Tensor tensor;  // data not yet set
  uint64_t offset;
};

// Shape outermost-first from ggml's innermost-first dims, rejecting counts that overflow int64.
std::vector<int64_t> read_shape(Cursor& c, const std::string& what) {
  const uint32_t n_dims = c.read<uint32_t>(what + " n_dims");
  if (n_dims > kMaxDims)
    c.fail(what + ": n_dims " + std::to_string(n_dims) + " exceeds ggml's " + std::to_string(kMaxDims));
  std::vector<int64_t> shape(n_dims);
  int64_t numel = 1;
  for (uint32_t i = 0; i < n_dims; ++i) {
    const uint64_t d = c.read<uint64_t>(what + " dims");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(d), &numel))
      c.fail(what + ": dims overflow the element count (dim " + std::to_string(d) + ")");
    shape[n_dims - 1 - i] = static_cast<int64_t>(d);
  }
  return shape;
}

// Bytes of `shape` in `dtype`; block types need whole blocks along the innermost dim, as ggml rows do.
size_t tensor_bytes(Cursor& c, DType dtype, const std::vector<int64_t>& shape, const std::string& what) {
  const DTypeInfo& info = dtype_info(dtype);
  const int64_t innermost = shape.empty() ? 1 : shape.back();
  if (innermost % info.block_elems != 0)
    c.fail(what + ": innermost dim " + std::to_string(innermost) + " is not a whole number of " +
           std::string(info.name) + " blocks (" + std::to_string(info.block_elems) + ")");
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;  // read_shape ruled out overflow
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel / info.block_elems),
                             static_cast<uint64_t>(info.block_bytes), &bytes))
    c.fail(what + ": byte size overflows");
  return bytes;
}

TensorInfo read_tensor_info(Cursor& c, uint64_t index) {
  TensorInfo info{};
  info.tensor.name = c.read_string("tensor name " + std::to_string(index));
  const std::string what = "tensor '" + info.tensor.name + "'";
  info.tensor.shape = read_shape(c, what);
  const uint32_t type = c.read<uint32_t>(what + " type");
  const auto dtype = dtype_of_ggml(type);
  if (!dtype) c.fail(what + ": unknown or unsupported ggml type " + std::to_string(type));
  info.tensor.dtype = *dtype;
  info.tensor.nbytes = tensor_bytes(c, *dtype, info.tensor.shape, what);
  info.offset = c.read<uint64_t>(what + " offset");
  return info;
}

// Points a tensor into the data section once its offset is known to be aligned and in bounds.
Tensor place(TensorInfo info, std::span<const std::byte> data, uint32_t alignment,
             const std::filesystem::path& path) {
  const std::string what = "tensor '" + info.tensor.name + "'";
  if (info.offset % alignment != 0)
    fail(path, what + ": data offset " + std::to_string(info.offset) +
                   " is not a multiple of the alignment " + std::to_string(alignment));
  if (info.offset > data.size() || info.tensor.nbytes > data.size() - info.offset)
    fail(path, what + ": bytes [" + std::to_string(info.offset) + ", " +
                   std::to_string(info.offset + info.tensor.nbytes) + ") lie outside the " +
                   std::to_string(data.size()) + "-byte data section");
  info.tensor.data = data.data() + info.offset;
  return std::move(info.tensor);
}

void check_no_overlap(const std::vector<Tensor>& tensors, const std::filesystem::path& path) {
  std::vector<const Tensor*> sorted;
  for (const Tensor& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const Tensor* a, const Tensor* b) { return a->data < b->data; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->data < sorted[i - 1]->data + sorted[i - 1]->nbytes)
      fail(path, "tensors '" + sorted[i - 1]->name + "' and '" + sorted[i]->name + "' overlap");
}

}  // namespace

std::string gguf_type_name(const GgufValue& value) {
  return std::visit(
      [](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (IsVector<T>::value)
          return "ARRAY of " + type_name(scalar_type<typename T::value_type>());
        else
          return type_name(scalar_type<T>());
      },
      value);
}

void GgufMetadata::add(std::string key, GgufValue value) {
  if (index_.count(key)) throw std::invalid_argument(origin_ + ": duplicate metadata key '" + key + "'");
  index_.emplace(key, entries_.size());
  entries_.emplace_back(std::move(key), std::move(value));
}

const GgufValue* GgufMetadata::value(std::string_view key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

// ---- GgufWriter ----

size_t GgufWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> shape) {
  const std::string what = "GgufWriter: tensor '" + name + "'";
  if (std::any_of(tensors_.begin(), tensors_.end(), [&](const Decl& d) { return d.name == name; }))
    throw std::invalid_argument(what + " declared twice");
  if (name.size() > kMaxNameBytes)
    throw std::invalid_argument(what + ": name longer than ggml's " + std::to_string(kMaxNameBytes) +
                                " bytes");
  if (!ggml_type_of(dtype))
    throw std::invalid_argument(what + ": GGUF has no type for " + std::string(dtype_info(dtype).name));
  if (shape.size() > kMaxDims)
    throw std::invalid_argument(what + ": more than " + std::to_string(kMaxDims) + " dims");
  if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; }))
    throw std::invalid_argument(what + ": negative dim in " + shape_string(shape));
  const int64_t block = dtype_info(dtype).block_elems;
  if ((shape.empty() ? 1 : shape.back()) % block != 0)
    throw std::invalid_argument(what + ": innermost dim of " + shape_string(shape) +
                                " is not a multiple of " + std::to_string(block));
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  tensors_.push_back({std::move(name), dtype, std::move(shape), *dtype_bytes(dtype, numel)});
  return tensors_.size() - 1;
}

uint32_t GgufWriter::alignment() const {
  const uint32_t a = metadata_.find<uint32_t>(kGgufAlignmentKey).value_or(kGgufDefaultAlignment);
  if (!is_power_of_two(a))
    throw std::invalid_argument("GgufWriter: " + std::string(kGgufAlignmentKey) + " " + std::to_string(a) +
                                " is not a power of two");
  return a;
}

void GgufWriter::write(const std::filesystem::path& path, const TensorWriter& write_tensor) const {
  write_atomically(path, [&](std::ostream& out) { write_stream(out, path.string() + ".tmp", write_tensor); });
}

void GgufWriter::write_stream(std::ostream& out, const std::filesystem::path& path,
                              const TensorWriter& write_tensor) const {
  const uint32_t align = alignment();
  out.write(kMagic, 4);
  put<uint32_t>(out, kWrittenVersion);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, metadata_.entries().size());
  for (const auto& [key, value] : metadata_.entries()) {
    put_string(out, key);
    put_value(out, value);
  }
  uint64_t offset = 0;
  for (const Decl& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) put<uint64_t>(out, static_cast<uint64_t>(*d));
    put<uint32_t>(out, *ggml_type_of(t.dtype));
    put<uint64_t>(out, offset);
    offset = align_up(offset + t.nbytes, align);
  }
  pad_to(out, align);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    write_declared_bytes(out, path, tensors_[i].name, tensors_[i].nbytes,
                         [&](std::ostream& o) { write_tensor(i, o); });
    pad_to(out, align);  // after the last tensor too, as ggml does, so the file size is aligned
  }
}

// ---- GgufFile ----

GgufFile::GgufFile(const std::filesystem::path& path, bool populate)
    : file_(path, populate), metadata_(path.string()) {
  Cursor c(file_.bytes(), path);
  const Header h = read_header(c);
  version_ = h.version;
  read_metadata(c, h.kv_count, metadata_);
  alignment_ = read_alignment(metadata_, path);
  std::vector<TensorInfo> infos;
  infos.reserve(h.tensor_count);
  for (uint64_t i = 0; i < h.tensor_count; ++i) infos.push_back(read_tensor_info(c, i));

  const auto bytes = file_.bytes();
  // A file without tensors may end before the padding; its data section is then empty.
  data_offset_ = std::min<uint64_t>(align_up(c.pos(), alignment_), bytes.size());
  const auto data = bytes.subspan(data_offset_);
  for (TensorInfo& info : infos) tensors_.push_back(place(std::move(info), data, alignment_, path));
  check_no_overlap(tensors_, path);
  for (const Tensor& t : tensors_)
    if (!by_name_.emplace(t.name, &t).second) fail(path, "duplicate tensor name '" + t.name + "'");
}

void GgufFile::release(const std::byte* data, size_t n) const {
  release_pages(data, n);
}

const Tensor* GgufFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const Tensor*> GgufFile::all() const {
  std::vector<const Tensor*> out;
  for (const Tensor& t : tensors_) out.push_back(&t);
  return out;
}

}  // namespace ge::formats
