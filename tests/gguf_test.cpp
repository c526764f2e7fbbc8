// The GGUF writer and reader: round trips, the exact bytes the spec prescribes, and the reader against
// files a broken writer could produce, each made by editing the bytes of a good file in a scratch folder.
#include "formats/gguf.h"

#include <gtest/gtest.h>

#include <cstring>

#include "test_util.h"

namespace ge {
namespace {

using formats::GgufFile;
using formats::GgufValue;
using formats::GgufWriter;

// A deterministic byte pattern per tensor, so a tensor read back from the wrong place shows.
std::vector<char> pattern(size_t tensor, size_t nbytes) {
  std::vector<char> v(nbytes);
  for (size_t k = 0; k < nbytes; ++k) v[k] = static_cast<char>((tensor * 37 + k * 11 + 5) & 0xff);
  return v;
}

// Streams the pattern of each tensor in small chunks, as a converter would stream rows.
GgufWriter::TensorWriter pattern_writer(const GgufWriter& w) {
  return [&w](size_t i, std::ostream& out) {
    const auto bytes = pattern(i, w.tensor_nbytes(i));
    for (size_t k = 0; k < bytes.size(); k += 7)
      out.write(bytes.data() + k, static_cast<std::streamsize>(std::min<size_t>(7, bytes.size() - k)));
  };
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(GgufRoundTrip, EveryMetadataTypeAndTensorBytes) {
  const std::vector<std::pair<std::string, GgufValue>> meta = {
      {"u8", uint8_t{200}},
      {"i8", int8_t{-5}},
      {"u16", uint16_t{60000}},
      {"i16", int16_t{-30000}},
      {"u32", uint32_t{4000000000u}},
      {"i32", int32_t{-2000000000}},
      {"u64", uint64_t{1} << 60},
      {"i64", -(int64_t{1} << 60)},
      {"f32", 1.5f},
      {"f64", -2.25},
      {"bool.true", true},
      {"bool.false", false},
      {"string", std::string("h\xc3\xa9llo")},
      {"string.empty", std::string()},
      {"arr.u8", std::vector<uint8_t>{0, 1, 255}},
      {"arr.i8", std::vector<int8_t>{-128, 0, 127}},
      {"arr.u16", std::vector<uint16_t>{1, 65535}},
      {"arr.i16", std::vector<int16_t>{-1, 2}},
      {"arr.u32", std::vector<uint32_t>{3, 4000000000u}},
      {"arr.i32", std::vector<int32_t>{-7, 8, 9}},
      {"arr.u64", std::vector<uint64_t>{uint64_t{1} << 63}},
      {"arr.i64", std::vector<int64_t>{-1}},
      {"arr.f32", std::vector<float>{0.5f, -1e30f, 3.25f}},
      {"arr.f32.empty", std::vector<float>{}},
      {"arr.f64", std::vector<double>{1e300}},
      {"arr.bool", std::vector<bool>{true, false, true}},
      {"arr.string", std::vector<std::string>{"<pad>", "", "\xe2\x96\x81the"}},
  };
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {
      {"f32", DType::F32, {3, 5}},       {"bf16", DType::BF16, {4, 7}}, {"f16", DType::F16, {9}},
      {"q8_0", DType::Q8_0, {3, 2, 64}}, {"q4_0", DType::Q4_0, {32}},   {"i32", DType::I32, {2, 1, 1, 3}},
      {"scalar", DType::F32, {}},
  };
  GgufWriter w;
  for (const auto& [k, v] : meta) w.add(k, v);
  for (const Spec& s : specs) w.add_tensor(s.name, s.dtype, s.shape);
  test::ScratchDir dir;
  const auto path = dir.path() / "model.gguf";
  w.write(path, pattern_writer(w));

  GgufFile file(path);
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.metadata().entries(), meta);
  const TensorSource& source = file;
  const auto all = source.all();
  ASSERT_EQ(all.size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    const Tensor* t = source.find(specs[i].name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(all[i], t);  // file order
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    EXPECT_EQ(t->nbytes, *dtype_bytes(specs[i].dtype, t->numel()));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 32, 0u);  // the map is page-aligned
    const auto expected = pattern(i, t->nbytes);
    EXPECT_EQ(std::memcmp(t->data, expected.data(), t->nbytes), 0);
  }
  EXPECT_EQ(source.find("absent"), nullptr);
  EXPECT_EQ(source.describe(), path.string());
}

TEST(GgufRoundTrip, TypedGetters) {
  GgufWriter w;
  w.add("n", uint32_t{42});
  w.add("name", std::string("gemma3"));
  w.add("scores", std::vector<float>{0.5f, 1.5f});
  w.add("tokens", std::vector<std::string>{"a", "b"});
  test::ScratchDir dir;
  const auto path = dir.path() / "m.gguf";
  w.write(path, pattern_writer(w));

  GgufFile file(path);
  const auto& m = file.metadata();
  EXPECT_EQ(m.get_u32("n"), 42u);
  EXPECT_EQ(m.get_string("name"), "gemma3");
  EXPECT_EQ(m.get_array<float>("scores"), (std::vector<float>{0.5f, 1.5f}));
  EXPECT_EQ(m.get_array<std::string>("tokens"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.find<uint32_t>("n"), 42u);
  EXPECT_EQ(m.find<uint32_t>("absent"), std::nullopt);
  const std::string wrong_type = error_of([&] { m.get_string("n"); });
  EXPECT_NE(wrong_type.find(path.string()), std::string::npos) << wrong_type;
  EXPECT_NE(wrong_type.find("'n' is UINT32, not STRING"), std::string::npos) << wrong_type;
  EXPECT_NE(error_of([&] { m.find<float>("scores"); }).find("is ARRAY of FLOAT32, not FLOAT32"),
            std::string::npos);
  EXPECT_NE(error_of([&] { m.get_u32("absent"); }).find("'absent' is missing"), std::string::npos);
}

// A tiny file checked byte by byte against the spec: header, one KV, one tensor info, padding, data.
TEST(GgufBytes, TinyFileMatchesSpec) {
  GgufWriter w;
  w.add("a", uint32_t{7});
  w.add_tensor("t", DType::F32, {2, 3});
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  test::ScratchDir dir;
  const auto path = dir.path() / "tiny.gguf";
  w.write(path,
          [&](size_t, std::ostream& out) { out.write(reinterpret_cast<const char*>(values.data()), 24); });

  const std::vector<unsigned char> header = {
      'G', 'G', 'U', 'F',                                  // 0: magic
      3,   0,   0,   0,                                    // 4: version (u32)
      1,   0,   0,   0,   0, 0, 0, 0,                      // 8: tensor count (u64)
      1,   0,   0,   0,   0, 0, 0, 0,                      // 16: metadata count (u64)
      1,   0,   0,   0,   0, 0, 0, 0, 'a',                 // 24: key, u64 length + bytes
      4,   0,   0,   0,                                    // 33: value type UINT32
      7,   0,   0,   0,                                    // 37: value
      1,   0,   0,   0,   0, 0, 0, 0, 't',                 // 41: tensor name
      2,   0,   0,   0,                                    // 50: n_dims
      3,   0,   0,   0,   0, 0, 0, 0,                      // 54: dims, innermost first: 3 ...
      2,   0,   0,   0,   0, 0, 0, 0,                      // 62: ... then 2 (our shape [2, 3])
      0,   0,   0,   0,                                    // 70: ggml type F32
      0,   0,   0,   0,   0, 0, 0, 0,                      // 74: offset in the data section
      0,   0,   0,   0,   0, 0, 0, 0, 0,   0, 0, 0, 0, 0,  // 82: zero padding up to 96, a multiple of 32
  };
  const auto bytes = test::read_bytes(path);
  ASSERT_EQ(bytes.size(), 128u);  // 96 + 24 bytes of data + 8 of padding to the alignment
  ASSERT_EQ(header.size(), 96u);
  for (size_t i = 0; i < header.size(); ++i)
    EXPECT_EQ(static_cast<unsigned char>(bytes[i]), header[i]) << "byte " << i;
  EXPECT_EQ(std::memcmp(bytes.data() + 96, values.data(), 24), 0);
  for (size_t i = 120; i < 128; ++i) EXPECT_EQ(bytes[i], 0) << "byte " << i;

  GgufFile file(path);
  EXPECT_EQ(file.data_offset(), 96u);
  EXPECT_EQ(file.find("t")->shape, (std::vector<int64_t>{2, 3}));
}

TEST(GgufBytes, AlignmentFromMetadata) {
  GgufWriter w;
  w.add("general.alignment", uint32_t{64});
  w.add_tensor("a", DType::F32, {3});
  w.add_tensor("b", DType::BF16, {5});
  w.add_tensor("c", DType::F32, {1});
  test::ScratchDir dir;
  const auto path = dir.path() / "aligned.gguf";
  w.write(path, pattern_writer(w));

  GgufFile file(path, /*populate=*/true);
  EXPECT_EQ(file.alignment(), 64u);
  EXPECT_EQ(file.data_offset() % 64, 0u);
  const std::byte* base = file.find("a")->data;
  EXPECT_EQ(file.find("b")->data - base, 64);  // 12 bytes of "a", padded to 64
  EXPECT_EQ(file.find("c")->data - base, 128);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % 64, 0u);
  EXPECT_EQ(std::filesystem::file_size(path), file.data_offset() + 192);
  for (size_t i = 0; i < 3; ++i) {
    const Tensor* t = file.all()[i];
    EXPECT_EQ(std::memcmp(t->data, pattern(i, t->nbytes).data(), t->nbytes), 0) << t->name;
  }
}

TEST(GgufWriterErrors, RejectsWhatGgufCannotHold) {
  GgufWriter w;
  w.add("k", uint32_t{1});
  EXPECT_THROW(w.add("k", uint32_t{2}), std::invalid_argument);
  w.add_tensor("t", DType::F32, {4});
  EXPECT_THROW(w.add_tensor("t", DType::F32, {4}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("u8", DType::U8, {4}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("q", DType::Q8_0, {32, 33}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("neg", DType::F32, {-1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), DType::F32, {4}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("5d", DType::F32, {1, 1, 1, 1, 1}), std::invalid_argument);

  GgufWriter bad_alignment;
  bad_alignment.add("general.alignment", uint32_t{48});
  test::ScratchDir dir;
  const auto path = dir.path() / "out.gguf";
  EXPECT_THROW(bad_alignment.write(path, pattern_writer(bad_alignment)), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
}

class GgufInterruptedWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    w_.add_tensor("a", DType::F32, {4});
    w_.add_tensor("b", DType::F32, {4});
  }
  void expect_no_output() {
    EXPECT_FALSE(std::filesystem::exists(out_));
    EXPECT_FALSE(std::filesystem::exists(out_.string() + ".tmp"));
  }
  GgufWriter w_;
  test::ScratchDir dir_;
  std::filesystem::path out_ = dir_.path() / "out.gguf";
};

TEST_F(GgufInterruptedWrite, CallbackThrows) {
  const auto throw_on_b = [](size_t i, std::ostream& out) {
    if (i == 1) throw std::runtime_error("source tensor unreadable");
    out.write("0123456789abcdef", 16);
  };
  EXPECT_EQ(error_of([&] { w_.write(out_, throw_on_b); }), "source tensor unreadable");
  expect_no_output();
}

TEST_F(GgufInterruptedWrite, CallbackWritesTheWrongByteCount) {
  const std::string msg =
      error_of([&] { w_.write(out_, [](size_t, std::ostream& out) { out.write("abc", 3); }); });
  EXPECT_NE(msg.find("tensor 'a': wrote 3 bytes, declared 16"), std::string::npos) << msg;
  expect_no_output();
}

TEST_F(GgufInterruptedWrite, LeavesAnExistingFileAlone) {
  test::write_bytes(out_, {'o', 'l', 'd'});
  EXPECT_THROW(w_.write(out_, [](size_t, std::ostream&) { throw std::runtime_error("stop"); }),
               std::runtime_error);
  EXPECT_EQ(test::read_bytes(out_), (std::vector<char>{'o', 'l', 'd'}));
  EXPECT_FALSE(std::filesystem::exists(out_.string() + ".tmp"));
}

// A good file whose layout the corruption tests edit:
//   0 header | 24 KV "k" = UINT32 7 | 41 KV "s" = STRING "hi" | 64 tensor info "a" F32 [8] offset 0
//   | 97 tensor info "b" F32 [8] offset 32 | 130 padding | 160 data of "a" | 192 data of "b" | 224 end
class GgufErrors : public ::testing::Test {
 protected:
  static constexpr size_t kVersion = 4, kTensorCount = 8, kKvCount = 16;
  static constexpr size_t kKeyK = 32, kTypeK = 33, kValueK = 37;
  static constexpr size_t kKeyS = 49, kStringLenS = 54;
  static constexpr size_t kNDimsA = 73, kDimA = 77, kTypeA = 85;
  static constexpr size_t kNameB = 105, kOffsetB = 122;

  void SetUp() override {
    GgufWriter w;
    w.add("k", uint32_t{7});
    w.add("s", std::string("hi"));
    w.add_tensor("a", DType::F32, {8});
    w.add_tensor("b", DType::F32, {8});
    w.write(file_, pattern_writer(w));
    bytes_ = test::read_bytes(file_);
  }
  template <class T>
  void patch(size_t pos, T v) {
    std::memcpy(bytes_.data() + pos, &v, sizeof v);
    test::write_bytes(file_, bytes_);
  }
  void truncate(size_t size) {
    bytes_.resize(size);
    test::write_bytes(file_, bytes_);
  }
  void expect_error(const std::string& fragment) {
    const std::string msg = error_of([&] { GgufFile file(file_); });
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message: " << msg;
    EXPECT_NE(msg.find(file_.string()), std::string::npos) << "message names no file: " << msg;
  }

  test::ScratchDir dir_;
  std::filesystem::path file_ = dir_.path() / "model.gguf";
  std::vector<char> bytes_;
};

TEST_F(GgufErrors, GoodFileHasTheLayoutTheTestsEdit) {
  ASSERT_EQ(bytes_.size(), 224u);
  GgufFile file(file_);
  EXPECT_EQ(file.data_offset(), 160u);
  EXPECT_EQ(file.find("b")->data - file.find("a")->data, 32);
  EXPECT_EQ(bytes_[kKeyK], 'k');
  EXPECT_EQ(bytes_[kKeyS], 's');
  EXPECT_EQ(bytes_[kNameB], 'b');
}

TEST_F(GgufErrors, BadMagic) {
  patch<char>(0, 'X');
  expect_error("bad magic");
}

TEST_F(GgufErrors, UnsupportedVersion) {
  patch<uint32_t>(kVersion, 4);
  expect_error("unsupported GGUF version 4");
}

TEST_F(GgufErrors, FileEndsInsideTheHeader) {
  truncate(12);
  expect_error("file ends inside the tensor count");
}

TEST_F(GgufErrors, TensorCountCannotFit) {
  patch<uint64_t>(kTensorCount, 1000000000000);
  expect_error("tensor count 1000000000000 cannot fit");
}

TEST_F(GgufErrors, MetadataCountCannotFit) {
  patch<uint64_t>(kKvCount, uint64_t{1} << 40);
  expect_error("metadata count 1099511627776 cannot fit");
}

TEST_F(GgufErrors, StringLengthPastEof) {
  patch<uint64_t>(kStringLenS, 1000);
  expect_error("metadata 's': string length 1000 runs past the end of the file");
}

TEST_F(GgufErrors, UnknownMetadataValueType) {
  patch<uint32_t>(kTypeK, 13);
  expect_error("metadata 'k': unknown metadata value type 13");
}

TEST_F(GgufErrors, BoolNeitherZeroNorOne) {
  patch<uint32_t>(kTypeK, 7);  // BOOL, whose byte is now the 7 of the old UINT32 value
  expect_error("metadata 'k': bool byte 7 is neither 0 nor 1");
}

TEST_F(GgufErrors, NestedArray) {
  patch<uint32_t>(kTypeK, 9);   // ARRAY ...
  patch<uint32_t>(kValueK, 9);  // ... of ARRAY
  expect_error("metadata 'k': nested arrays are not supported");
}

TEST_F(GgufErrors, DuplicateMetadataKey) {
  patch<char>(kKeyS, 'k');
  expect_error("duplicate metadata key 'k'");
}

TEST_F(GgufErrors, UnknownGgmlType) {
  patch<uint32_t>(kTypeA, 99);
  expect_error("tensor 'a': unknown or unsupported ggml type 99");
}

TEST_F(GgufErrors, TooManyDims) {
  patch<uint32_t>(kNDimsA, 5);
  expect_error("tensor 'a': n_dims 5 exceeds ggml's 4");
}

TEST_F(GgufErrors, DimsOverflow) {
  patch<uint64_t>(kDimA, uint64_t{1} << 63);
  expect_error("tensor 'a': dims overflow");
}

TEST_F(GgufErrors, PartialBlock) {
  patch<uint32_t>(kTypeA, 8);  // Q8_0, but 8 elements are a quarter of a block
  expect_error("tensor 'a': innermost dim 8 is not a whole number of Q8_0 blocks (32)");
}

TEST_F(GgufErrors, OffsetNotAligned) {
  patch<uint64_t>(kOffsetB, 33);
  expect_error("tensor 'b': data offset 33 is not a multiple of the alignment 32");
}

TEST_F(GgufErrors, OffsetPlusSizeOutsideTheFile) {
  patch<uint64_t>(kOffsetB, 64);
  expect_error("tensor 'b': bytes [64, 96) lie outside the 64-byte data section");
}

TEST_F(GgufErrors, TruncatedData) {
  truncate(200);
  expect_error("tensor 'b': bytes [32, 64) lie outside the 40-byte data section");
}

TEST_F(GgufErrors, OverlappingTensors) {
  patch<uint64_t>(kOffsetB, 0);
  expect_error("tensors 'a' and 'b' overlap");
}

TEST_F(GgufErrors, DuplicateTensorName) {
  patch<char>(kNameB, 'a');
  expect_error("duplicate tensor name 'a'");
}

TEST(GgufAlignmentErrors, AlignmentNotAPowerOfTwo) {
  GgufWriter w;
  w.add("general.alignment", uint32_t{64});
  test::ScratchDir dir;
  const auto path = dir.path() / "m.gguf";
  w.write(path, pattern_writer(w));
  auto bytes = test::read_bytes(path);
  const uint32_t bad = 48;
  std::memcpy(bytes.data() + 24 + 8 + 17 + 4, &bad, 4);  // header, key length, key, value type
  test::write_bytes(path, bytes);
  const std::string msg = error_of([&] { GgufFile file(path); });
  EXPECT_NE(msg.find(path.string() + ": general.alignment 48 is not a power of two"), std::string::npos)
      << msg;
}

}  // namespace
}  // namespace ge
