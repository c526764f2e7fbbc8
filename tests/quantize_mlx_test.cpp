// `gemma quantize`: the folder read back with our safetensors reader and checked against values computed
// here from the input: quantized matrices byte for byte against kernels::quantize_row (the packing itself is
// tested in mlx_quant_test), everything else byte-identical, config.json and tokenizer files as mlx-lm
// writes them, shards with their index, and no output at all after an error or a signal.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <set>

#include "formats/atomic_output.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "kernels/mlx_quant.h"
#include "quantize/mlx_quantize.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using kernels::QuantMode;
using kernels::QuantParams;
using nlohmann::json;

// ---- Helpers ----

json header_of(const fs::path& file) {
  return test::split_safetensors(test::read_bytes(file)).header;
}

std::vector<std::byte> bytes_of(const Tensor& t) {
  return {t.data, t.data + t.nbytes};
}

// Row r of a float tensor as f32, decoded here rather than with the code under test.
std::vector<float> row_f32(const Tensor& t, int64_t r) {
  const int64_t cols = t.shape.back();
  std::vector<float> out(static_cast<size_t>(cols));
  const std::byte* src = t.data + static_cast<size_t>(r * cols) * dtype_info(t.dtype).block_bytes;
  for (int64_t j = 0; j < cols; ++j) {
    uint16_t h;
    if (t.dtype == DType::F32) {
      std::memcpy(&out[j], src + 4 * j, 4);
      continue;
    }
    std::memcpy(&h, src + 2 * j, 2);
    out[j] = t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
  return out;
}

struct Quantized {
  std::vector<std::byte> codes, scales, biases;
};

// The contract: each row of the input through kernels::quantize_row, rows one after the other.
Quantized quantize_reference(const Tensor& t, const QuantParams& p) {
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const DType scale_type = p.mode == QuantMode::kAffine ? t.dtype : DType::U8;
  const size_t code_row = static_cast<size_t>(cols * p.bits / 8);
  const size_t scale_row = static_cast<size_t>(cols / p.group_size) * dtype_info(scale_type).block_bytes;
  const bool affine = p.mode == QuantMode::kAffine;
  Quantized q{std::vector<std::byte>(rows * code_row), std::vector<std::byte>(rows * scale_row),
              std::vector<std::byte>(affine ? rows * scale_row : 0)};
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row = row_f32(t, r);
    kernels::quantize_row(p, row.data(), cols, scale_type, q.codes.data() + r * code_row,
                          q.scales.data() + r * scale_row,
                          affine ? q.biases.data() + r * scale_row : nullptr);
  }
  return q;
}

std::string base_of(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - 7);  // ".weight"
}

void expect_quantized(const formats::SafetensorsCheckpoint& out, const Tensor& in, const QuantParams& p) {
  SCOPED_TRACE(in.name + " as " + kernels::describe(p));
  const int64_t rows = in.shape[0], cols = in.shape[1];
  const std::string base = base_of(in.name);
  const Tensor* w = out.find(in.name);
  const Tensor* s = out.find(base + ".scales");
  const Tensor* b = out.find(base + ".biases");
  ASSERT_NE(w, nullptr);
  ASSERT_NE(s, nullptr);
  const bool affine = p.mode == QuantMode::kAffine;
  ASSERT_EQ(b != nullptr, affine);
  EXPECT_EQ(w->dtype, DType::U32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{rows, cols * p.bits / 32}));
  EXPECT_EQ(s->dtype, affine ? in.dtype : DType::U8);
  EXPECT_EQ(s->shape, (std::vector<int64_t>{rows, cols / p.group_size}));
  const Quantized expected = quantize_reference(in, p);
  EXPECT_EQ(bytes_of(*w), expected.codes);
  EXPECT_EQ(bytes_of(*s), expected.scales);
  if (b) {
    EXPECT_EQ(b->dtype, in.dtype);
    EXPECT_EQ(b->shape, s->shape);
    EXPECT_EQ(bytes_of(*b), expected.biases);
  }
}

void expect_copied(const formats::SafetensorsCheckpoint& out, const Tensor& in) {
  SCOPED_TRACE(in.name + " copied");
  const Tensor* t = out.find(in.name);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, in.dtype);
  EXPECT_EQ(t->shape, in.shape);
  EXPECT_EQ(bytes_of(*t), bytes_of(in));
  if (in.name.ends_with(".weight")) {
    EXPECT_EQ(out.find(base_of(in.name) + ".scales"), nullptr);
  }
}

using Rule = std::function<std::optional<QuantParams>(const Tensor&)>;

// Every input tensor is in the output as `rule` says (quantized with those parameters, or copied), and the
// output has no other tensors.
void expect_checkpoint(const fs::path& out_dir, const fs::path& in_dir, const Rule& rule) {
  const formats::SafetensorsCheckpoint in(in_dir), out(out_dir);
  size_t expected_count = 0;
  for (const Tensor* t : in.all()) {
    if (const auto p = rule(*t)) {
      expect_quantized(out, *t, *p);
      expected_count += p->mode == QuantMode::kAffine ? 3 : 2;
    } else {
      expect_copied(out, *t);
      expected_count += 1;
    }
  }
  EXPECT_EQ(out.all().size(), expected_count);
}

bool is_matrix(const Tensor& t) {
  return t.shape.size() == 2;
}

quantize::QuantizeOptions with_params(QuantParams p) {
  quantize::QuantizeOptions o;
  o.params = p;
  o.threads = 2;
  return o;
}

// Output folder and its temporary sibling are both absent.
void expect_no_output(const fs::path& out) {
  EXPECT_FALSE(fs::exists(out)) << out;
  EXPECT_FALSE(fs::exists(out.string() + ".tmp")) << out;
}

// A small checkpoint written here: config.json of the fixture and these tensors (random values).
struct FakeTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

void write_checkpoint(const fs::path& dir, const std::vector<FakeTensor>& tensors, const json& config) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  formats::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const FakeTensor& t : tensors) w.add_tensor(t.name, t.dtype, t.shape);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  w.write(dir / "model.safetensors", [&](size_t i, std::ostream& out) {
    const FakeTensor& t = tensors[i];
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    for (int64_t k = 0; k < n; ++k) {
      const float v = normal(rng);
      if (t.dtype == DType::F32) {
        out.write(reinterpret_cast<const char*>(&v), 4);
      } else if (t.dtype == DType::U8) {
        out.put(static_cast<char>(k));
      } else {
        const uint16_t h = t.dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        out.write(reinterpret_cast<const char*>(&h), 2);
      }
    }
  });
}

// ---- SafetensorsWriter ----

TEST(SafetensorsWriter, RoundTripsDtypesAndShapesThroughTheReader) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "t.safetensors";
  const std::vector<FakeTensor> decl = {{"f32", DType::F32, {2, 3}},   {"bf16", DType::BF16, {5}},
                                        {"empty", DType::F16, {0, 4}}, {"u8", DType::U8, {3, 5}},
                                        {"u32", DType::U32, {2, 2}},   {"i32", DType::I32, {}},
                                        {"f16", DType::F16, {1, 7}}};
  formats::SafetensorsWriter w;
  w.set_metadata("format", "mlx");
  std::vector<std::vector<char>> data;
  for (size_t i = 0; i < decl.size(); ++i) {
    EXPECT_EQ(w.add_tensor(decl[i].name, decl[i].dtype, decl[i].shape), i);
    int64_t n = 1;
    for (int64_t d : decl[i].shape) n *= d;
    std::vector<char> bytes(*dtype_bytes(decl[i].dtype, n));
    for (size_t k = 0; k < bytes.size(); ++k) bytes[k] = static_cast<char>(17 * i + 3 * k + 1);
    data.push_back(bytes);
  }
  w.write(file, [&](size_t i, std::ostream& out) {
    out.write(data[i].data(), static_cast<std::streamsize>(data[i].size()));
  });

  const auto raw = test::read_bytes(file);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u) << "the data section starts 8-byte aligned";
  EXPECT_EQ(header_len, w.header().size());
  EXPECT_EQ(raw.size(), 8 + header_len + w.data_bytes());
  const std::string header_text(raw.data() + 8, raw.data() + 8 + header_len);
  EXPECT_EQ(header_text.find_last_not_of(' '), header_text.rfind('}')) << "padding is spaces after the JSON";
  const json header = json::parse(header_text);
  EXPECT_EQ(header["__metadata__"], (json{{"format", "mlx"}}));
  EXPECT_EQ(header["u8"]["dtype"], "U8");
  EXPECT_EQ(header["f32"]["data_offsets"], (json{0, 24}));
  EXPECT_EQ(header["bf16"]["data_offsets"], (json{24, 34}));  // data in declaration order, packed

  const formats::SafetensorsFile read(file, false);
  ASSERT_EQ(read.tensors().size(), decl.size());
  for (size_t i = 0; i < decl.size(); ++i) {
    SCOPED_TRACE(decl[i].name);
    const auto it = std::find_if(read.tensors().begin(), read.tensors().end(),
                                 [&](const Tensor& t) { return t.name == decl[i].name; });
    ASSERT_NE(it, read.tensors().end());
    EXPECT_EQ(it->dtype, decl[i].dtype);
    EXPECT_EQ(it->shape, decl[i].shape);
    ASSERT_EQ(it->nbytes, data[i].size());
    if (!data[i].empty()) EXPECT_EQ(std::memcmp(it->data, data[i].data(), data[i].size()), 0);  // never null
  }
}

TEST(SafetensorsWriter, AWrongByteCountFailsNamingTheTensorAndLeavesNoFile) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "t.safetensors";
  formats::SafetensorsWriter w;
  w.add_tensor("ok", DType::F32, {2});
  w.add_tensor("short", DType::BF16, {4});
  const std::string error = test::error_of(
      [&] { w.write(file, [](size_t i, std::ostream& out) { out.write("12345678", i == 0 ? 8 : 6); }); });
  EXPECT_NE(error.find("tensor 'short': wrote 6 bytes, declared 8"), std::string::npos) << error;
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(SafetensorsWriter, RejectsWhatTheFormatCannotHold) {
  formats::SafetensorsWriter w;
  w.add_tensor("a", DType::F32, {1});
  EXPECT_THROW(w.add_tensor("a", DType::F32, {1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("q", DType::Q8_0, {32}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("n", DType::F32, {-1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("__metadata__", DType::F32, {1}), std::invalid_argument);
}

// ---- quantize_checkpoint on the gemma3-tiny fixture (bf16, hidden 64, intermediate 128, vocab 1024) ----

TEST(QuantizeMlx, AffineDefaultQuantizesEveryMatrixAndCopiesTheRest) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q4";
  const QuantParams p{QuantMode::kAffine, 4, 64};
  auto o = with_params(p);
  std::vector<quantize::Progress> reports;
  o.progress = [&](const quantize::Progress& progress) { reports.push_back(progress); };
  const auto r = quantize::quantize_checkpoint(test::demo_model_dir(), out, o);
  expect_checkpoint(out, test::demo_model_dir(), [&](const Tensor& t) -> std::optional<QuantParams> {
    if (is_matrix(t)) return p;
    return std::nullopt;
  });
  EXPECT_EQ(r.quantized_tensors, 1u + 8 * 7);  // embedding + 7 matrices per layer
  EXPECT_EQ(r.copied_tensors, 1u + 8 * 6);     // final norm + 6 norms per layer
  EXPECT_EQ(r.shards, 1u);
  uint64_t in_bytes = 0, out_bytes = 0;
  const formats::SafetensorsCheckpoint in_ckpt(test::demo_model_dir()), out_ckpt(out);
  for (const Tensor* t : in_ckpt.all()) in_bytes += t->nbytes;
  for (const Tensor* t : out_ckpt.all()) out_bytes += t->nbytes;
  EXPECT_EQ(r.input_bytes, in_bytes);
  EXPECT_EQ(r.output_bytes, out_bytes);
  // One report per input tensor, the last one complete.
  ASSERT_EQ(reports.size(), in_ckpt.all().size());
  EXPECT_EQ(reports.back().tensors_done, reports.back().tensors_total);
  EXPECT_EQ(reports.back().bytes_done, out_bytes);
  EXPECT_EQ(reports.back().bytes_total, out_bytes);
  const json header = header_of(out / "model.safetensors");
  EXPECT_EQ(header["__metadata__"], (json{{"format", "mlx"}}));
  EXPECT_EQ(header["model.embed_tokens.weight"]["shape"], (json{1024, 8}));
  EXPECT_EQ(header["model.embed_tokens.scales"]["shape"], (json{1024, 1}));
  EXPECT_EQ(header["model.layers.0.mlp.down_proj.weight"]["shape"], (json{64, 16}));
  EXPECT_EQ(header["model.layers.0.mlp.down_proj.biases"]["dtype"], "BF16");
}

Rule matrices_with(const QuantParams& p) {
  return [p](const Tensor& t) -> std::optional<QuantParams> {
    if (is_matrix(t) && t.shape[1] % p.group_size == 0) return p;
    return std::nullopt;
  };
}

TEST(QuantizeMlx, EveryModeAndBitWidthMatchesQuantizeRow) {
  const std::vector<QuantParams> cases = {{QuantMode::kNvfp4, 4, 16},  {QuantMode::kMxfp4, 4, 32},
                                          {QuantMode::kMxfp8, 8, 32},  {QuantMode::kAffine, 3, 32},
                                          {QuantMode::kAffine, 5, 64}, {QuantMode::kAffine, 6, 64},
                                          {QuantMode::kAffine, 2, 32}, {QuantMode::kAffine, 8, 128}};
  for (const QuantParams& p : cases) {
    SCOPED_TRACE(kernels::describe(p));
    test::ScratchDir dir;
    const fs::path out = dir.path() / "q";
    quantize::quantize_checkpoint(test::demo_model_dir(), out, with_params(p));
    expect_checkpoint(out, test::demo_model_dir(), matrices_with(p));
    const json q = test::read_json(out / "config.json")["quantization"];
    EXPECT_EQ(q, (json{{"group_size", p.group_size},
                       {"bits", p.bits},
                       {"mode", std::string(kernels::quant_mode_name(p.mode))}}));
  }
}

TEST(QuantizeMlx, GroupSize128LeavesTheNarrowMatricesFloatWithoutAConfigEntry) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  const QuantParams p{QuantMode::kAffine, 4, 128};
  const auto r = quantize::quantize_checkpoint(test::demo_model_dir(), out, with_params(p));
  expect_checkpoint(out, test::demo_model_dir(), matrices_with(p));
  EXPECT_EQ(r.quantized_tensors, 8u * 2);  // o_proj and down_proj have 128 columns
  const formats::SafetensorsCheckpoint q(out);
  EXPECT_EQ(q.find("model.layers.3.self_attn.q_proj.weight")->dtype, DType::BF16);
  EXPECT_EQ(q.find("model.embed_tokens.weight")->dtype, DType::BF16);
  EXPECT_EQ(q.find("model.layers.3.self_attn.o_proj.weight")->dtype, DType::U32);
  EXPECT_EQ(q.find("model.layers.3.mlp.down_proj.scales")->shape, (std::vector<int64_t>{64, 1}));
  const json config = test::read_json(out / "config.json");
  EXPECT_EQ(config["quantization"], (json{{"group_size", 128}, {"bits", 4}, {"mode", "affine"}}));
}

TEST(QuantizeMlx, ConfigGainsBothDictsAndKeepsEverythingElse) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  quantize::quantize_checkpoint(test::demo_model_dir(), out, with_params({QuantMode::kAffine, 4, 64}));
  json config = test::read_json(out / "config.json");
  const json expected = {{"group_size", 64}, {"bits", 4}, {"mode", "affine"}};
  EXPECT_EQ(config["quantization"], expected);
  EXPECT_EQ(config["quantization_config"], expected);
  config.erase("quantization");
  config.erase("quantization_config");
  EXPECT_EQ(config, test::read_json(test::demo_model_dir() / "config.json"));
}

TEST(QuantizeMlx, KeepEmbeddingLeavesItFloatAndSaysFalse) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  auto o = with_params({QuantMode::kMxfp4, 4, 32});
  o.keep_embedding = true;
  quantize::quantize_checkpoint(test::demo_model_dir(), out, o);
  expect_checkpoint(out, test::demo_model_dir(), [&](const Tensor& t) -> std::optional<QuantParams> {
    if (t.name == "model.embed_tokens.weight") return std::nullopt;
    return matrices_with(o.params)(t);
  });
  const json config = test::read_json(out / "config.json");
  const json expected = {{"group_size", 32}, {"bits", 4}, {"mode", "mxfp4"}, {"model.embed_tokens", false}};
  EXPECT_EQ(config["quantization"], expected);
  EXPECT_EQ(config["quantization_config"], expected);
}

TEST(QuantizeMlx, EmbeddingBitsQuantizesItAtThoseBitsWithAnEntry) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  auto o = with_params({QuantMode::kAffine, 4, 64});
  o.embedding_bits = 8;
  quantize::quantize_checkpoint(test::demo_model_dir(), out, o);
  const QuantParams embedding{QuantMode::kAffine, 8, 64};
  expect_checkpoint(out, test::demo_model_dir(), [&](const Tensor& t) -> std::optional<QuantParams> {
    if (t.name == "model.embed_tokens.weight") return embedding;
    return matrices_with(o.params)(t);
  });
  EXPECT_EQ(header_of(out / "model.safetensors")["model.embed_tokens.weight"]["shape"], (json{1024, 16}));
  const json config = test::read_json(out / "config.json");
  const json expected = {{"group_size", 64},
                         {"bits", 4},
                         {"mode", "affine"},
                         {"model.embed_tokens", {{"group_size", 64}, {"bits", 8}, {"mode", "affine"}}}};
  EXPECT_EQ(config["quantization"], expected);
  EXPECT_EQ(config["quantization_config"], expected);
}

TEST(QuantizeMlx, TokenizerAndGenerationFilesAreCopiedByteForByte) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  quantize::quantize_checkpoint(test::demo_model_dir(), out, with_params({QuantMode::kAffine, 4, 64}));
  std::set<std::string> expected = {"config.json", "model.safetensors"}, got;
  for (const auto& e : fs::directory_iterator(test::demo_model_dir())) {
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name == "model.safetensors") continue;
    expected.insert(name);
    EXPECT_EQ(test::read_bytes(out / name), test::read_bytes(e.path())) << name;
  }
  for (const auto& e : fs::directory_iterator(out)) got.insert(e.path().filename().string());
  EXPECT_EQ(got, expected);
  EXPECT_TRUE(expected.count("tokenizer.json") && expected.count("generation_config.json"));
}

TEST(QuantizeMlx, ATinyShardLimitGivesShardsAndAnIndexCoveringEveryTensor) {
  test::ScratchDir dir;
  const fs::path single = dir.path() / "single", sharded = dir.path() / "sharded";
  auto o = with_params({QuantMode::kAffine, 4, 64});
  quantize::quantize_checkpoint(test::demo_model_dir(), single, o);
  o.shard_bytes =
      40000;  // the embedding alone (32 KiB of codes, 4 KiB of scales and biases) nearly fills one
  const auto r = quantize::quantize_checkpoint(test::demo_model_dir(), sharded, o);
  ASSERT_GT(r.shards, 2u);
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));

  const json index = test::read_json(sharded / "model.safetensors.index.json");
  const formats::SafetensorsCheckpoint a(single), b(sharded);
  ASSERT_EQ(index["weight_map"].size(), a.all().size());
  uint64_t total = 0;
  std::set<std::string> files;
  for (const Tensor* t : a.all()) {
    SCOPED_TRACE(t->name);
    ASSERT_TRUE(index["weight_map"].contains(t->name));
    const std::string file = index["weight_map"][t->name];
    files.insert(file);
    // The index names the shard that holds the tensor, and the tensor is the one of the single file.
    EXPECT_TRUE(header_of(sharded / file).contains(t->name));
    const Tensor* s = b.find(t->name);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->dtype, t->dtype);
    EXPECT_EQ(bytes_of(*s), bytes_of(*t));
    total += t->nbytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(files.size(), r.shards);
  char name[64];
  for (size_t i = 1; i <= r.shards; ++i) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i, r.shards);
    ASSERT_TRUE(files.count(name)) << name;
    const fs::path shard = sharded / name;
    EXPECT_EQ(header_of(shard)["__metadata__"], (json{{"format", "mlx"}}));
    const auto parts = test::split_safetensors(test::read_bytes(shard));
    // No shard passes the limit unless it holds a single input tensor's outputs.
    if (parts.data.size() > o.shard_bytes) {
      EXPECT_LE(parts.header.size(), 4u) << name;
    }
  }
}

// The fixture's tensors split over two shards with an index, plus a weights file of another format: the
// input is read through its index, and none of its weight files end up in the output.
TEST(QuantizeMlx, AShardedInputIsReadAndItsWeightFilesAreNotCopied) {
  test::ScratchDir dir;
  const fs::path in = dir.path() / "in", out = dir.path() / "q";
  fs::create_directories(in);
  test::copy_files(test::demo_model_dir(), in);
  fs::remove(in / "model.safetensors");
  std::ofstream(in / "pytorch_model.bin") << "old weights";
  const formats::SafetensorsCheckpoint demo(test::demo_model_dir());
  const std::vector<const Tensor*> all = demo.all();
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (size_t shard = 0; shard < 2; ++shard) {
    const std::string file = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
    std::vector<const Tensor*> part;
    for (size_t i = shard; i < all.size(); i += 2) part.push_back(all[i]);
    formats::SafetensorsWriter w;
    for (const Tensor* t : part) {
      w.add_tensor(t->name, t->dtype, t->shape);
      index["weight_map"][t->name] = file;
    }
    w.write(in / file, [&](size_t i, std::ostream& o) {
      o.write(reinterpret_cast<const char*>(part[i]->data), static_cast<std::streamsize>(part[i]->nbytes));
    });
  }
  std::ofstream(in / "model.safetensors.index.json") << index.dump();

  const QuantParams p{QuantMode::kAffine, 4, 64};
  quantize::quantize_checkpoint(in, out, with_params(p));
  expect_checkpoint(out, test::demo_model_dir(), matrices_with(p));
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  for (const char* name :
       {"model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"})
    EXPECT_FALSE(fs::exists(out / name)) << name;
  EXPECT_TRUE(fs::exists(out / "tokenizer.model"));
}

// A mixed-dtype multimodal checkpoint (Gemma 3 "language_model.model." names): the towers and the projector
// are copied, scales take each weight's own float type, and the config key uses the checkpoint's prefix.
TEST(QuantizeMlx, MultimodalNamesAndFloatTypes) {
  test::ScratchDir dir;
  const fs::path in = dir.path() / "in", out = dir.path() / "q";
  write_checkpoint(in,
                   {{"language_model.model.embed_tokens.weight", DType::F16, {16, 64}},
                    {"language_model.model.layers.0.self_attn.q_proj.weight", DType::F32, {8, 64}},
                    {"language_model.model.layers.0.mlp.down_proj.weight", DType::BF16, {4, 128}},
                    {"language_model.model.norm.weight", DType::F32, {64}},
                    {"language_model.model.layers.0.mlp.odd_proj.weight", DType::F32, {4, 48}},
                    {"language_model.model.layers.0.extra.weight", DType::F32, {2, 2, 64}},
                    {"language_model.model.layers.0.ids.weight", DType::U8, {2, 64}},
                    {"vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", DType::F32, {8, 64}},
                    {"multi_modal_projector.mm_input_projection_weight", DType::F32, {64, 64}},
                    {"multi_modal_projector.mm_soft_emb_norm.weight", DType::F32, {64}}},
                   {{"model_type", "gemma3"}, {"text_config", {{"hidden_size", 64}}}});
  auto o = with_params({QuantMode::kAffine, 4, 64});
  o.embedding_bits = 6;
  quantize::quantize_checkpoint(in, out, o);
  expect_checkpoint(out, in, [&](const Tensor& t) -> std::optional<QuantParams> {
    if (t.name == "language_model.model.embed_tokens.weight") return QuantParams{QuantMode::kAffine, 6, 64};
    if (t.name.ends_with("q_proj.weight") || t.name.ends_with("down_proj.weight")) return o.params;
    return std::nullopt;
  });
  const formats::SafetensorsCheckpoint q(out);
  EXPECT_EQ(q.find("language_model.model.embed_tokens.scales")->dtype, DType::F16);
  EXPECT_EQ(q.find("language_model.model.layers.0.self_attn.q_proj.biases")->dtype, DType::F32);
  const json config = test::read_json(out / "config.json");
  EXPECT_EQ(config["quantization"]["language_model.model.embed_tokens"],
            (json{{"group_size", 64}, {"bits", 6}, {"mode", "affine"}}));
  EXPECT_EQ(config["text_config"], (json{{"hidden_size", 64}}));
}

// ---- Errors leave nothing behind ----

std::string quantize_error(const fs::path& in, const fs::path& out, const quantize::QuantizeOptions& o) {
  return test::error_of([&] { quantize::quantize_checkpoint(in, out, o); });
}

TEST(QuantizeMlx, ParametersMlxRejectsFailBeforeAnythingIsWritten) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  const auto in = test::demo_model_dir();
  EXPECT_NE(
      quantize_error(in, out, with_params({QuantMode::kNvfp4, 4, 32})).find("nvfp4 requires group size 16"),
      std::string::npos);
  EXPECT_NE(quantize_error(in, out, with_params({QuantMode::kAffine, 7, 64})).find("affine bits 7"),
            std::string::npos);
  EXPECT_NE(quantize_error(in, out, with_params({QuantMode::kAffine, 4, 16})).find("group size 16"),
            std::string::npos);
  auto o = with_params({QuantMode::kMxfp8, 8, 32});
  o.embedding_bits = 8;
  EXPECT_NE(quantize_error(in, out, o).find("--embedding-bits applies to affine mode only, not mxfp8"),
            std::string::npos);
  o = with_params({QuantMode::kAffine, 4, 64});
  o.embedding_bits = 7;
  EXPECT_NE(quantize_error(in, out, o).find("invalid --embedding-bits: affine bits 7"), std::string::npos);
  o.embedding_bits = 8;
  o.keep_embedding = true;
  EXPECT_NE(quantize_error(in, out, o).find("exclude each other"), std::string::npos);
  expect_no_output(out);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(QuantizeMlx, AnAlreadyQuantizedInputIsRefused) {
  test::ScratchDir dir;
  const fs::path once = dir.path() / "once", twice = dir.path() / "twice";
  const auto o = with_params({QuantMode::kAffine, 4, 64});
  quantize::quantize_checkpoint(test::demo_model_dir(), once, o);
  EXPECT_NE(quantize_error(once, twice, o).find("already quantized"), std::string::npos);
  expect_no_output(twice);

  // Without the config entry, the .scales tensors give it away.
  json config = test::read_json(once / "config.json");
  config.erase("quantization");
  std::ofstream(once / "config.json") << config.dump();
  const std::string error = quantize_error(once, twice, o);
  EXPECT_NE(error.find("tensor 'model.embed_tokens.scales': the checkpoint is already quantized"),
            std::string::npos)
      << error;
  expect_no_output(twice);
}

TEST(QuantizeMlx, AMissingOrBrokenConfigIsNamed) {
  test::ScratchDir dir;
  const fs::path in = dir.path() / "in", out = dir.path() / "q";
  fs::create_directories(in);
  test::copy_files(test::demo_model_dir(), in);
  const auto o = with_params({QuantMode::kAffine, 4, 64});
  fs::remove(in / "config.json");
  EXPECT_NE(quantize_error(in, out, o).find((in / "config.json").string() + ": not found"),
            std::string::npos);
  std::ofstream(in / "config.json") << "{ not json";
  EXPECT_NE(quantize_error(in, out, o).find((in / "config.json").string() + ": invalid JSON"),
            std::string::npos);
  std::ofstream(in / "config.json") << "[1, 2]";
  EXPECT_NE(quantize_error(in, out, o).find("expected a JSON object"), std::string::npos);
  expect_no_output(out);
  EXPECT_NE(quantize_error(dir.path() / "nowhere", out, o).find("not a directory"), std::string::npos);
  fs::remove(in / "model.safetensors");
  std::ofstream(in / "config.json") << "{}";
  EXPECT_NE(quantize_error(in, out, o).find("no model.safetensors"), std::string::npos);
  expect_no_output(out);
}

TEST(QuantizeMlx, AnExistingOutputIsKeptUnlessForced) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  fs::create_directories(out);
  std::ofstream(out / "mine.txt") << "keep me";
  auto o = with_params({QuantMode::kAffine, 4, 64});
  EXPECT_NE(quantize_error(test::demo_model_dir(), out, o).find("already exists"), std::string::npos);
  EXPECT_TRUE(fs::exists(out / "mine.txt"));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));

  o.force = true;
  quantize::quantize_checkpoint(test::demo_model_dir(), out, o);
  EXPECT_FALSE(fs::exists(out / "mine.txt"));
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));

  // --force never replaces the input (or a folder holding it) with the output.
  const fs::path in = dir.path() / "in";
  fs::create_directories(in);
  test::copy_files(test::demo_model_dir(), in);
  for (const fs::path& target : {in, dir.path(), fs::path(in.string() + "/")}) {
    const std::string error = quantize_error(in, target, o);
    EXPECT_NE(error.find("would replace the input"), std::string::npos) << target << ": " << error;
    EXPECT_TRUE(fs::exists(in / "model.safetensors"));
  }
}

TEST(QuantizeMlx, AStaleTemporaryFolderIsNotRemovedWithoutForce) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  fs::create_directories(out.string() + ".tmp");
  auto o = with_params({QuantMode::kAffine, 4, 64});
  EXPECT_NE(quantize_error(test::demo_model_dir(), out, o).find("interrupted run"), std::string::npos);
  EXPECT_FALSE(fs::exists(out));
  o.force = true;
  quantize::quantize_checkpoint(test::demo_model_dir(), out, o);
  EXPECT_TRUE(fs::exists(out / "config.json"));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
}

TEST(QuantizeMlx, AFailureHalfwayRemovesTheTemporaryFolder) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  auto o = with_params({QuantMode::kAffine, 4, 64});
  o.shard_bytes = 40000;
  bool saw_tmp = false;
  o.progress = [&](const quantize::Progress& p) {
    saw_tmp = fs::exists(out.string() + ".tmp");
    if (p.tensors_done == 20) throw std::runtime_error("disk full, say");
  };
  EXPECT_EQ(quantize_error(test::demo_model_dir(), out, o), "disk full, say");
  EXPECT_TRUE(saw_tmp);
  expect_no_output(out);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(QuantizeMlx, SigintOrSigtermHalfwayLeavesNoFolder) {
  for (int sig : {SIGINT, SIGTERM}) {
    test::ScratchDir dir;
    const fs::path out = dir.path() / "q";
    const int status = test::run_in_child([&] {
      auto o = with_params({QuantMode::kAffine, 4, 64});
      o.shard_bytes = 40000;  // several files in the folder by the time the signal comes
      o.progress = [&](const quantize::Progress& p) {
        if (p.tensors_done == 60) raise(sig);
      };
      quantize::quantize_checkpoint(test::demo_model_dir(), out, o);
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    expect_no_output(out);
    EXPECT_TRUE(fs::is_empty(dir.path()));
  }
}

// The guard quantize relies on: a whole tree goes, symlinks in it are removed without being followed.
TEST(QuantizeMlx, TheSignalGuardRemovesANestedTree) {
  test::ScratchDir dir;
  const fs::path tree = dir.path() / "tree", outside = dir.path() / "outside.txt";
  std::ofstream(outside) << "not mine";
  fs::create_directories(tree / "a" / "b");
  for (int i = 0; i < 200; ++i) std::ofstream(tree / ("file-with-a-longish-name-" + std::to_string(i))) << i;
  std::ofstream(tree / "a" / "b" / "deep") << "x";
  fs::create_symlink(outside, tree / "a" / "link");
  fs::create_directory_symlink(dir.path(), tree / "a" / "dirlink");
  const int status = test::run_in_child([&] {
    const formats::RemovalOnSignal guard(tree, formats::RemovalOnSignal::Target::kTree);
    raise(SIGTERM);
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(fs::exists(fs::symlink_status(tree)));
  EXPECT_TRUE(fs::exists(outside));
}

// ---- The command line ----

test::GemmaRun gemma(const std::string& args) { return test::run_gemma(args); }

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

TEST(QuantizeMlx, CommandLineEndToEnd) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "q";
  const std::string in = quoted(test::demo_model_dir());
  auto r = gemma("quantize " + in + " -o " + quoted(out) + " --mode mxfp8 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "") << "no progress line when stderr is not a terminal";
  const QuantParams p{QuantMode::kMxfp8, 8, 32};
  expect_checkpoint(out, test::demo_model_dir(), matrices_with(p));
  EXPECT_EQ(test::read_json(out / "config.json")["quantization"],
            (json{{"group_size", 32}, {"bits", 8}, {"mode", "mxfp8"}}));

  r = gemma("quantize " + in + " -o " + quoted(out));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("gemma: error: " + out.string() + ": already exists"), std::string::npos)
      << r.output;

  r = gemma("quantize " + in + " -o " + quoted(out) + " --force --bits 3 --group-size 32 --keep-embedding");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::read_json(out / "config.json")["quantization"],
            (json{{"group_size", 32}, {"bits", 3}, {"mode", "affine"}, {"model.embed_tokens", false}}));

  const fs::path bad = dir.path() / "bad";
  for (const std::string args :
       {"--bits 7", "--mode nvfp4 --group-size 32", "--mode fp3", "--mode mxfp4 --embedding-bits 8"}) {
    r = gemma("quantize " + in + " -o " + quoted(bad) + " " + args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.output.find("gemma: error: "), std::string::npos) << args << ": " << r.output;
    expect_no_output(bad);
  }
}

}  // namespace
}  // namespace ge
