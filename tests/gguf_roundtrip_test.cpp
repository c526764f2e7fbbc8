// `gemma convert` -> GGUF -> `gemma` again: a model loaded from the converted file gives the logits of the
// model loaded from the Hugging Face folder. For the quantized types (q8_0, q4_0, and the mixes q4_k_m,
// q5_k_m, q6_k) the honest reference is the folder's model with every matrix passed through quantize +
// dequantize in the type the file holds it in; the distance to the unquantized model is printed (the
// fixtures' random weights make it large, see README).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <regex>

#include "convert/gguf_convert.h"
#include "formats/safetensors.h"
#include "kernels/ggml_blocks.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"
#include "loader/gguf_model.h"
#include "loader/model_loader.h"
#include "models/gemma/model.h"
#include "tensor/dtype.h"
#include "gguf_edit.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using convert::OutType;

std::vector<float> widened(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, t.data + 2 * i, 2);
    out[i] = t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
  return out;
}

// The type the converted file stores a checkpoint matrix in.
using MatrixTypes = std::function<DType(const Tensor& matrix)>;

// The checkpoint with every matrix replaced by f32 copies of its round trip through the type `type_of`
// gives it: quantize -> dequantize for the block types, computed here with the block quantizers (themselves
// tested bit-exact against ggml's), f16 rounding for F16; F32 and the checkpoint's own dtype leave it be.
class QuantizedRoundTrip final : public TensorSource {
 public:
  QuantizedRoundTrip(const formats::SafetensorsCheckpoint& src, const MatrixTypes& type_of) : src_(src) {
    for (const Tensor* t : src.all()) {
      if (t->shape.size() != 2) continue;
      const DType type = type_of(*t);
      if (type == DType::F32 || type == t->dtype) continue;
      // The converter quantizes every matrix of these fixtures it can: bf16, rows of whole blocks.
      if (t->dtype != DType::BF16 || t->shape[1] % dtype_info(type).block_elems != 0)
        throw std::logic_error(t->name + ": not a bf16 matrix of whole " +
                               std::string(dtype_info(type).name) + " blocks");
      std::vector<float>& out = storage_.emplace_back(widened(*t));
      round_trip(type, out);
      Tensor copy = *t;
      copy.dtype = DType::F32;
      copy.data = reinterpret_cast<const std::byte*>(out.data());
      copy.nbytes = out.size() * sizeof(float);
      replaced_.emplace(t->name, copy);
    }
  }
  // Every matrix in one type (q8_0, q4_0).
  QuantizedRoundTrip(const formats::SafetensorsCheckpoint& src, DType block)
      : QuantizedRoundTrip(src, [block](const Tensor&) { return block; }) {}

  const Tensor* find(std::string_view name) const override {
    const auto it = replaced_.find(name);
    return it != replaced_.end() ? &it->second : src_.find(name);
  }
  std::vector<const Tensor*> all() const override { return src_.all(); }
  std::string describe() const override { return src_.describe() + " (quantized round trip)"; }

 private:
  static void round_trip(DType type, std::vector<float>& values) {
    const auto n = static_cast<int64_t>(values.size());
    if (type == DType::F16) {
      for (float& v : values) v = f16_to_f32(f32_to_f16(v));
      return;
    }
    std::vector<std::byte> blocks(*dtype_bytes(type, n));
    kernels::quantize_blocks(type, values.data(), n, blocks.data());
    kernels::dequantize_blocks(type, blocks.data(), n, values.data());
  }

  const formats::SafetensorsCheckpoint& src_;
  std::deque<std::vector<float>> storage_;
  std::map<std::string, Tensor, std::less<>> replaced_;
};

std::vector<int32_t> reference_ids(const std::string& fixture) {
  return test::read_json(test::fixture_reference_dir(fixture) / "reference.json")["token_ids"]
      .get<std::vector<int32_t>>();
}

std::vector<float> all_logits(models::CausalLM& model, const std::vector<int32_t>& ids) {
  kernels::ThreadPool pool(2);
  std::vector<float> out(ids.size() * model.shape().vocab_size);
  auto cache = model.make_cache(static_cast<int64_t>(ids.size()));
  model.forward(ids, 0, cache, pool, out.data(), true);
  return out;
}

std::vector<float> checkpoint_logits(const fs::path& dir, const std::vector<int32_t>& ids,
                                     const TensorSource* tensors = nullptr) {
  const formats::SafetensorsCheckpoint ckpt(dir);
  gemma::Model model(loader::load_config(dir), tensors ? *tensors : ckpt, 64);
  return all_logits(model, ids);
}

std::vector<float> folder_logits(const std::string& fixture, const TensorSource* tensors = nullptr) {
  return checkpoint_logits(test::fixture_model_dir(fixture), reference_ids(fixture), tensors);
}

std::vector<float> file_logits(const fs::path& file, const std::vector<int32_t>& ids) {
  loader::LoadedModel m = loader::load_model(file, 64);
  return all_logits(*m.model, ids);
}

fs::path convert_to(const fs::path& checkpoint, const fs::path& out_dir, OutType type) {
  const fs::path file = out_dir / "model.gguf";
  convert::ConvertOptions options;
  options.out_type = type;
  convert::convert_to_gguf(checkpoint, file, options);
  return file;
}

std::vector<float> gguf_logits(const std::string& fixture, OutType type) {
  test::ScratchDir dir;
  return file_logits(convert_to(test::fixture_model_dir(fixture), dir.path(), type), reference_ids(fixture));
}

struct Case {
  std::string fixture;
  OutType type;
  float tolerance;
};

class ConvertedModel : public ::testing::TestWithParam<Case> {};

// f32/bf16 files hold the checkpoint's values exactly (norms as w + 1 in f32, which the loaded model uses
// as is): only the summation order differs. f16 rounds the bf16 weights' smallest values.
TEST_P(ConvertedModel, LogitsEqualTheFolders) {
  const Case& c = GetParam();
  const auto expected = folder_logits(c.fixture);
  const auto got = gguf_logits(c.fixture, c.type);
  ASSERT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  std::printf("%s %s: max |logit(gguf) - logit(folder)| = %.3g\n", c.fixture.c_str(),
              std::string(convert::out_type_name(c.type)).c_str(), diff);
  EXPECT_LT(diff, c.tolerance);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ConvertedModel,
                         ::testing::Values(Case{"gemma3-tiny", OutType::F32, 1e-4f},
                                           Case{"gemma3-tiny", OutType::BF16, 1e-4f},
                                           Case{"gemma3-tiny", OutType::F16, 1e-3f},
                                           Case{"gemma3-tiny-rope", OutType::F32, 1e-4f},
                                           Case{"gemma3-tiny-rope", OutType::BF16, 1e-4f},
                                           Case{"gemma3-tiny-rope", OutType::F16, 1e-3f},
                                           Case{"gemma-tiny", OutType::BF16, 1e-4f},
                                           // query_pre_attn_scalar 16, not head_dim 32.
                                           Case{"gemma2-tiny", OutType::F32, 1e-4f},
                                           Case{"gemma2-tiny", OutType::BF16, 1e-4f}));

class ConvertedQuantizedModel : public ::testing::TestWithParam<Case> {};

TEST_P(ConvertedQuantizedModel, LogitsEqualTheFoldersModelWithRoundTrippedWeights) {
  const Case& c = GetParam();
  const formats::SafetensorsCheckpoint ckpt(test::fixture_model_dir(c.fixture));
  const QuantizedRoundTrip rounded(ckpt, c.type == OutType::Q8_0 ? DType::Q8_0 : DType::Q4_0);
  const auto expected = folder_logits(c.fixture, &rounded);
  const auto got = gguf_logits(c.fixture, c.type);
  ASSERT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  const auto exact = folder_logits(c.fixture);
  std::printf(
      "%s %s: max |logit(gguf) - logit(round-tripped folder)| = %.3g; to the unquantized model %.3g\n",
      c.fixture.c_str(), std::string(convert::out_type_name(c.type)).c_str(), diff,
      test::max_abs_diff(got.data(), exact.data(), got.size()));
  EXPECT_LT(diff, c.tolerance);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ConvertedQuantizedModel,
                         ::testing::Values(Case{"gemma3-tiny", OutType::Q8_0, 1e-4f},
                                           Case{"gemma3-tiny", OutType::Q4_0, 1e-4f},
                                           Case{"gemma3-tiny-rope", OutType::Q8_0, 1e-4f},
                                           Case{"gemma3-tiny-rope", OutType::Q4_0, 1e-4f}));

// The GGUF name of a Gemma 3 text checkpoint matrix (model.embed_tokens, model.layers.N.*).
std::string gguf_matrix_name(const std::string& checkpoint_name) {
  if (checkpoint_name == "model.embed_tokens.weight") return "token_embd.weight";
  static const std::regex layer(R"(model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight)");
  static const std::map<std::string, std::string> kinds = {
      {"q", "attn_q"},      {"k", "attn_k"},  {"v", "attn_v"},     {"o", "attn_output"},
      {"gate", "ffn_gate"}, {"up", "ffn_up"}, {"down", "ffn_down"}};
  std::smatch m;
  if (!std::regex_match(checkpoint_name, m, layer) || !kinds.count(m[3]))
    throw std::logic_error(checkpoint_name + ": no GGUF name known");
  return "blk." + m[1].str() + "." + kinds.at(m[3]) + ".weight";
}

// llama-quantize's mixes give each matrix its own type (which ones is checked in convert_test): the
// reference is the folder's model with each matrix round-tripped through the type the file holds it in.
class ConvertedMixModel : public ::testing::TestWithParam<Case> {};

TEST_P(ConvertedMixModel, LogitsEqualTheFoldersModelWithEachMatrixRoundTrippedThroughItsFileType) {
  const Case& c = GetParam();
  test::ScratchDir dir;
  const fs::path file = convert_to(test::fixture_model_dir(c.fixture), dir.path(), c.type);
  std::map<std::string, int> type_counts;
  std::map<std::string, DType> file_types;
  {
    const formats::GgufFile g(file);
    for (const Tensor* t : g.all()) {
      file_types[t->name] = t->dtype;
      if (t->shape.size() == 2) ++type_counts[std::string(dtype_info(t->dtype).name)];
    }
  }
  const formats::SafetensorsCheckpoint ckpt(test::fixture_model_dir(c.fixture));
  const QuantizedRoundTrip rounded(ckpt,
                                   [&](const Tensor& m) { return file_types.at(gguf_matrix_name(m.name)); });
  const auto expected = folder_logits(c.fixture, &rounded);
  const auto got = file_logits(file, reference_ids(c.fixture));
  ASSERT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  const auto exact = folder_logits(c.fixture);
  std::string types;
  for (const auto& [name, count] : type_counts) types += std::string(" ") + std::to_string(count) + " " + name;
  std::printf(
      "%s %s (matrices:%s): max |logit(gguf) - logit(round-tripped folder)| = %.3g; to the unquantized "
      "model %.3g\n",
      c.fixture.c_str(), std::string(convert::out_type_name(c.type)).c_str(), types.c_str(), diff,
      test::max_abs_diff(got.data(), exact.data(), got.size()));
  EXPECT_LT(diff, c.tolerance);
}

// gemma3-tiny (hidden 64, MLP 128): every matrix falls back to a 32-value type; gemma3-256: the K types.
INSTANTIATE_TEST_SUITE_P(Fixtures, ConvertedMixModel,
                         ::testing::Values(Case{"gemma3-tiny", OutType::Q4_K_M, 1e-4f},
                                           Case{"gemma3-tiny", OutType::Q5_K_M, 1e-4f},
                                           Case{"gemma3-tiny", OutType::Q6_K, 1e-4f},
                                           Case{"gguf-types/gemma3-256", OutType::Q4_K_M, 1e-4f},
                                           Case{"gguf-types/gemma3-256", OutType::Q5_K_M, 1e-4f},
                                           Case{"gguf-types/gemma3-256", OutType::Q6_K, 1e-4f}));

// The vocabulary stored in the file encodes and decodes as the folder's tokenizer files do.
TEST(ConvertedModelLoad, TokenizerFromTheFileEqualsTheFolders) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "model.gguf";
  convert::convert_to_gguf(test::demo_model_dir(), file);
  const loader::LoadedModel from_file = loader::load_model(file, 8);
  const Tokenizer folder = Tokenizer::load(test::demo_model_dir());
  for (const std::string text : {"Why is the sky blue?", "<start_of_turn>user\nhi<end_of_turn>\n",
                                 "  two  spaces", "caf\xC3\xA9 \xF0\x9F\x98\x80", "tab\tnew\nline"}) {
    const auto ids = folder.encode(text, true);
    EXPECT_EQ(from_file.tokenizer.encode(text, true), ids) << text;
    EXPECT_EQ(from_file.tokenizer.decode(ids), folder.decode(ids)) << text;
  }
  EXPECT_EQ(from_file.tokenizer.bos_id(), folder.bos_id());
  EXPECT_EQ(from_file.tokenizer.eos_id(), folder.eos_id());
  EXPECT_EQ(from_file.defaults.eos_ids, std::vector<int32_t>{folder.eos_id()});
  EXPECT_EQ(from_file.defaults.sampling.temperature, 0.0f);  // greedy, as a folder without generation_config
}

TEST(ConvertedModelLoad, Gemma1FileStopsAtTheEotIdItsConverterWrites) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "model.gguf";
  convert::convert_to_gguf(test::fixture_model_dir("gemma-tiny"), file);
  const loader::LoadedModel m = loader::load_model(file, 8);
  EXPECT_EQ(m.defaults.eos_ids, (std::vector<int32_t>{m.tokenizer.eos_id(), 107}));
}

TEST(ConvertedModelLoad, AnUnknownTensorIsNamedWithTheFile) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "model.gguf";
  convert::convert_to_gguf(test::demo_model_dir(), file);
  // Rename one tensor to something no Gemma layer has: the loader names it instead of ignoring it.
  auto bytes = test::read_bytes(file);
  const std::string from = "blk.0.ffn_up.weight", to = "blk.0.ffn_xx.weight";
  const auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  ASSERT_NE(at, bytes.end());
  std::copy(to.begin(), to.end(), at);
  test::write_bytes(file, bytes);
  try {
    loader::load_model(file, 8);
    FAIL() << "loaded a file with an unknown tensor";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.ffn_xx.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
  }
}

// A copy of gemma3-tiny-rope (explicit layer_types, 8 layers, head_dim 32) with its own layer pattern and
// query_pre_attn_scalar: what llama.cpp's keys cannot carry unless the pattern is periodic.
class EditedGemma3 {
 public:
  EditedGemma3(const std::vector<std::string>& layer_types, double query_pre_attn_scalar)
      : src_(dir_.path() / "ckpt") {
    fs::create_directories(src_);
    test::copy_files(test::fixture_model_dir(kFixture), src_);
    nlohmann::json config = test::read_json(src_ / "config.json");
    config["layer_types"] = layer_types;
    config["query_pre_attn_scalar"] = query_pre_attn_scalar;
    std::ofstream(src_ / "config.json") << config.dump(2);
  }
  const fs::path& checkpoint() const { return src_; }
  fs::path convert(OutType type) const { return convert_to(src_, dir_.path(), type); }
  static std::vector<int32_t> ids() { return reference_ids(kFixture); }

  static constexpr const char* kFixture = "gemma3-tiny-rope";

 private:
  test::ScratchDir dir_;
  fs::path src_;
};

constexpr const char* kS = "sliding_attention";
constexpr const char* kF = "full_attention";

std::vector<bool> sliding_of(const gemma::Config& c) {
  std::vector<bool> out;
  for (const gemma::LayerConfig& l : c.layers) out.push_back(l.sliding);
  return out;
}

// The converted file's logits against the edited folder's, f32 so only the summation order differs.
void expect_round_trip_exact(const EditedGemma3& ckpt, const fs::path& file) {
  const auto expected = checkpoint_logits(ckpt.checkpoint(), EditedGemma3::ids());
  const auto got = file_logits(file, EditedGemma3::ids());
  ASSERT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  std::printf("%s: max |logit(gguf) - logit(folder)| = %.3g\n", file.filename().c_str(), diff);
  EXPECT_LT(diff, 1e-4f);
}

// No period gives sliding, full, sliding, sliding, full, ...: the file lists the layers in a key of ours, and
// carries query_pre_attn_scalar (20, not head_dim) in another; both reach the loaded model.
TEST(ConvertedModelLoad, IrregularLayerTypesAndQueryScalarSurviveTheRoundTrip) {
  const std::vector<std::string> types = {kS, kF, kS, kS, kF, kS, kS, kS};
  const EditedGemma3 ckpt(types, 20);
  const fs::path file = ckpt.convert(OutType::F32);
  const formats::GgufFile g(file);
  const auto& m = g.metadata();
  const std::vector<bool> sliding = {true, false, true, true, false, true, true, true};
  EXPECT_EQ(m.get_array<bool>("gemma3.attention.sliding_window_layers"), sliding);
  EXPECT_EQ(m.value("gemma3.attention.sliding_window_pattern"), nullptr);
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.attention.query_pre_attn_scalar"), 20.0f);
  const gemma::Config c = loader::config_from_gguf(g);
  EXPECT_EQ(sliding_of(c), sliding);
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 20.0);

  // The edits matter: the edited folder is far from the fixture's own model.
  const auto edited = checkpoint_logits(ckpt.checkpoint(), EditedGemma3::ids());
  const auto original = folder_logits(EditedGemma3::kFixture);
  EXPECT_GT(test::max_abs_diff(edited.data(), original.data(), edited.size()), 0.1f);
  expect_round_trip_exact(ckpt, file);
}

// A pattern some period gives is written as llama.cpp's sliding_window_pattern (layer l slides unless
// l % period == period - 1; 0: every layer slides), and no per-layer key.
TEST(ConvertedModelLoad, PeriodicLayerTypesAreWrittenAsLlamaCppsPeriod) {
  struct Periodic {
    std::vector<std::string> types;
    uint32_t period;
  };
  for (const Periodic& p : {Periodic{{kS, kS, kF, kS, kS, kF, kS, kS}, 3},
                            Periodic{{kS, kS, kS, kS, kS, kS, kS, kS}, 0},
                            Periodic{{kS, kS, kS, kS, kS, kS, kS, kF}, 8}}) {
    SCOPED_TRACE("period " + std::to_string(p.period));
    const EditedGemma3 ckpt(p.types, 32);
    const fs::path file = ckpt.convert(OutType::F32);
    {
      const formats::GgufFile g(file);
      EXPECT_EQ(g.metadata().get_u32("gemma3.attention.sliding_window_pattern"), p.period);
      EXPECT_EQ(g.metadata().value("gemma3.attention.sliding_window_layers"), nullptr);
      std::vector<bool> sliding;
      for (const std::string& t : p.types) sliding.push_back(t == kS);
      EXPECT_EQ(sliding_of(loader::config_from_gguf(g)), sliding);
    }
    expect_round_trip_exact(ckpt, file);
  }
}

// A copy of `file` without the metadata `keys` (tensors byte for byte), as another converter would write it.
fs::path without_keys(const fs::path& file, const std::vector<std::string>& keys, const fs::path& out) {
  std::map<std::string, std::optional<formats::GgufValue>> dropped;
  for (const std::string& k : keys) dropped[k] = std::nullopt;
  test::rewrite_gguf(file, out, dropped);
  return out;
}

// Without the keys (a file from llama.cpp's converter), llama.cpp's reading holds: Gemma 2 slides on even
// layers, Gemma 3 on 5 of every 6, and both scale by head_dim.
TEST(ConvertedModelLoad, FileWithoutTheLayerAndScaleKeysReadsAsLlamaCppDoes) {
  struct Family {
    std::string fixture, arch;
    std::vector<bool> sliding;
  };
  for (const Family& f : {Family{"gemma2-tiny", "gemma2", {true, false, true, false, true, false}},
                          Family{"gemma3-tiny", "gemma3", {true, true, true, true, true, false, true, true}}}) {
    SCOPED_TRACE(f.fixture);
    test::ScratchDir dir;
    const fs::path full = convert_to(test::fixture_model_dir(f.fixture), dir.path(), OutType::F32);
    const fs::path bare = without_keys(
        full, {f.arch + ".attention.sliding_window_pattern", f.arch + ".attention.query_pre_attn_scalar"},
        dir.path() / "bare.gguf");
    const gemma::Config c = loader::config_from_gguf(formats::GgufFile(bare));
    EXPECT_EQ(sliding_of(c), f.sliding);
    EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, static_cast<double>(c.head_dim));
  }
}

}  // namespace
}  // namespace ge
