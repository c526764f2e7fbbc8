// The safetensors reader against files a lying or broken writer could produce, each made from the good
// demo checkpoint in a scratch folder.
#include <gtest/gtest.h>

#include <cstring>

#include "formats/safetensors.h"
#include "test_util.h"

namespace ge {
namespace {

class SafetensorsErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    test::copy_files(test::demo_model_dir(), dir_.path());
    file_ = dir_.path() / "model.safetensors";
    parts_ = test::split_safetensors(test::read_bytes(file_));
  }
  void write(const nlohmann::json& header) { test::write_bytes(file_, test::join_safetensors(header.dump(), parts_.data)); }
  // Loads the folder and returns the error message (empty if it loaded).
  std::string load_error() {
    try {
      formats::SafetensorsCheckpoint ckpt(dir_.path());
      return "";
    } catch (const std::runtime_error& e) {
      return e.what();
    }
  }
  void expect_error(const std::string& fragment) {
    const std::string msg = load_error();
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message: " << msg;
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << "message names no file: " << msg;
  }

  test::ScratchDir dir_;
  std::filesystem::path file_;
  test::SafetensorsParts parts_;
  const std::string tensor_ = "model.layers.0.mlp.up_proj.weight";
};

TEST_F(SafetensorsErrors, GoodFileLoadsAndMapsEveryTensor) {
  EXPECT_EQ(load_error(), "");
  formats::SafetensorsCheckpoint ckpt(dir_.path());
  const Tensor* t = ckpt.find(tensor_);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::BF16);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(t->nbytes, 128u * 64u * 2u);
  EXPECT_EQ(ckpt.all().size(), parts_.header.size() - 1);  // minus __metadata__
}

TEST_F(SafetensorsErrors, TruncatedData) {
  auto bytes = test::read_bytes(file_);
  bytes.resize(bytes.size() - 1000);
  test::write_bytes(file_, bytes);
  expect_error("outside the");
}

TEST_F(SafetensorsErrors, HeaderLengthPastEndOfFile) {
  auto bytes = test::read_bytes(file_);
  const uint64_t huge = bytes.size() + 1;
  std::memcpy(bytes.data(), &huge, 8);
  test::write_bytes(file_, bytes);
  expect_error("header length");
}

TEST_F(SafetensorsErrors, FileShorterThanTheLengthField) {
  test::write_bytes(file_, {'a', 'b', 'c'});
  expect_error("too short");
}

TEST_F(SafetensorsErrors, HeaderIsNotJson) {
  test::write_bytes(file_, test::join_safetensors("{not json", parts_.data));
  expect_error("not a valid JSON");
}

TEST_F(SafetensorsErrors, OverlappingTensors) {
  auto h = parts_.header;
  const auto other = h["model.layers.0.mlp.gate_proj.weight"]["data_offsets"];
  h[tensor_]["data_offsets"] = other;
  write(h);
  expect_error("overlap");
}

TEST_F(SafetensorsErrors, OffsetsPastTheData) {
  auto h = parts_.header;
  h[tensor_]["data_offsets"] = {parts_.data.size() - 10, parts_.data.size() + 16374};
  write(h);
  expect_error(tensor_);
}

TEST_F(SafetensorsErrors, ShapeDisagreesWithByteRange) {
  auto h = parts_.header;
  h[tensor_]["shape"] = {128, 65};
  write(h);
  expect_error("needs");
}

TEST_F(SafetensorsErrors, UnknownDtype) {
  auto h = parts_.header;
  h[tensor_]["dtype"] = "F8_E4M3X";
  write(h);
  expect_error("unsupported dtype F8_E4M3X");
}

TEST_F(SafetensorsErrors, MissingFile) {
  std::filesystem::remove(file_);
  const std::string msg = load_error();
  EXPECT_NE(msg.find("no model.safetensors"), std::string::npos) << msg;
}

TEST(SafetensorsShards, IndexedShardsLoadTogetherAndMissingOnesAreNamed) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  const auto parts = test::split_safetensors(test::read_bytes(dir.path() / "model.safetensors"));
  std::filesystem::remove(dir.path() / "model.safetensors");
  // Two shards: the embedding alone, then everything else (offsets rebased).
  nlohmann::json first = {{"__metadata__", {{"format", "pt"}}}}, second = first, index;
  std::vector<char> first_data, second_data;
  for (const auto& [name, e] : parts.header.items()) {
    if (name == "__metadata__") continue;
    const auto begin = e["data_offsets"][0].get<size_t>(), end = e["data_offsets"][1].get<size_t>();
    const bool embed = name == "model.embed_tokens.weight";
    auto& data = embed ? first_data : second_data;
    auto entry = e;
    entry["data_offsets"] = {data.size(), data.size() + end - begin};
    data.insert(data.end(), parts.data.begin() + static_cast<std::ptrdiff_t>(begin),
                parts.data.begin() + static_cast<std::ptrdiff_t>(end));
    (embed ? first : second)[name] = entry;
    index["weight_map"][name] = embed ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  test::write_bytes(dir.path() / "model-00001-of-00002.safetensors", test::join_safetensors(first.dump(), first_data));
  test::write_bytes(dir.path() / "model-00002-of-00002.safetensors", test::join_safetensors(second.dump(), second_data));
  std::ofstream(dir.path() / "model.safetensors.index.json") << index.dump();

  formats::SafetensorsCheckpoint ckpt(dir.path());
  EXPECT_EQ(ckpt.all().size(), parts.header.size() - 1);
  ASSERT_NE(ckpt.find("model.embed_tokens.weight"), nullptr);

  std::filesystem::remove(dir.path() / "model-00001-of-00002.safetensors");
  try {
    formats::SafetensorsCheckpoint broken(dir.path());
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00001-of-00002.safetensors"), std::string::npos) << e.what();
  }
}

// An index names shards of its own folder only: a path elsewhere is refused before anything is opened.
TEST(SafetensorsShards, IndexNamingAFileOutsideTheFolderIsRefused) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  const auto shard = (dir.path() / "model.safetensors").string();
  for (const std::string& named : {shard, std::string("../model.safetensors"), std::string("sub/model.safetensors"),
                                   std::string(".."), std::string("")}) {
    std::ofstream(dir.path() / "model.safetensors.index.json", std::ios::trunc)
        << nlohmann::json{{"weight_map", {{"model.embed_tokens.weight", named}}}}.dump();
    try {
      formats::SafetensorsCheckpoint ckpt(dir.path());
      FAIL() << "loaded shard '" << named << "'";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("model.safetensors.index.json: weight_map: 'model.embed_tokens.weight' names '" +
                                           named + "', which is not a file name in this folder"),
                std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace ge
