// `gemma convert` -> GGUF -> `gemma` again: a model loaded from the converted file gives the logits of the
// model loaded from the Hugging Face folder. For q8_0/q4_0 the honest reference is the folder's model with
// every quantized matrix passed through quantize + dequantize; the distance to the unquantized model is
// printed (the fixtures' random weights make it large, see README).
#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <map>

#include "convert/gguf_convert.h"
#include "formats/safetensors.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"
#include "loader/model_loader.h"
#include "tensor/dtype.h"
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

// The checkpoint with every matrix replaced by f32 copies of its quantize -> dequantize round trip, computed
// here with the block quantizers (themselves tested bit-exact against ggml's layout).
class QuantizedRoundTrip final : public TensorSource {
 public:
  QuantizedRoundTrip(const formats::SafetensorsCheckpoint& src, DType block) : src_(src) {
    for (const Tensor* t : src.all()) {
      if (t->shape.size() != 2) continue;
      // The converter quantizes every matrix of these fixtures: bf16, rows of whole blocks.
      if (t->dtype != DType::BF16 || t->shape[1] % kernels::kQuantBlock != 0)
        throw std::logic_error(t->name + ": not a bf16 matrix of whole 32-weight blocks");
      std::vector<float> values = widened(*t);
      std::vector<std::byte> blocks(*dtype_bytes(block, t->numel()));
      std::vector<float>& out = storage_.emplace_back(values.size());
      if (block == DType::Q8_0) {
        kernels::quantize_row_q8_0(values.data(), t->numel(), blocks.data());
        kernels::dequantize_row_q8_0(blocks.data(), t->numel(), out.data());
      } else {
        kernels::quantize_row_q4_0(values.data(), t->numel(), blocks.data());
        kernels::dequantize_row_q4_0(blocks.data(), t->numel(), out.data());
      }
      Tensor copy = *t;
      copy.dtype = DType::F32;
      copy.data = reinterpret_cast<const std::byte*>(out.data());
      copy.nbytes = out.size() * sizeof(float);
      replaced_.emplace(t->name, copy);
    }
  }
  const Tensor* find(std::string_view name) const override {
    const auto it = replaced_.find(name);
    return it != replaced_.end() ? &it->second : src_.find(name);
  }
  std::vector<const Tensor*> all() const override { return src_.all(); }
  std::string describe() const override { return src_.describe() + " (quantized round trip)"; }

 private:
  const formats::SafetensorsCheckpoint& src_;
  std::deque<std::vector<float>> storage_;
  std::map<std::string, Tensor, std::less<>> replaced_;
};

std::vector<int32_t> reference_ids(const std::string& fixture) {
  return test::read_json(test::fixture_reference_dir(fixture) / "reference.json")["token_ids"]
      .get<std::vector<int32_t>>();
}

std::vector<float> all_logits(gemma::Model& model, const std::vector<int32_t>& ids) {
  kernels::ThreadPool pool(2);
  std::vector<float> out(ids.size() * model.config().vocab_size);
  auto cache = model.make_cache(static_cast<int64_t>(ids.size()));
  model.forward(ids, 0, cache, pool, out.data(), true);
  return out;
}

std::vector<float> folder_logits(const std::string& fixture, const TensorSource* tensors = nullptr) {
  const fs::path dir = test::fixture_model_dir(fixture);
  const formats::SafetensorsCheckpoint ckpt(dir);
  gemma::Model model(loader::load_config(dir), tensors ? *tensors : ckpt, 64);
  return all_logits(model, reference_ids(fixture));
}

std::vector<float> gguf_logits(const std::string& fixture, OutType type) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "model.gguf";
  convert::ConvertOptions options;
  options.out_type = type;
  convert::convert_to_gguf(test::fixture_model_dir(fixture), file, options);
  loader::LoadedModel m = loader::load_model(file, 64);
  return all_logits(*m.model, reference_ids(fixture));
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
                                           Case{"gemma-tiny", OutType::BF16, 1e-4f}));

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

}  // namespace
}  // namespace ge
