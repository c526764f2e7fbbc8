// A "clip" mmproj GGUF written by `gemma convert --mmproj` as the vision side of Gemma 3: the config from its
// metadata against the fixture's config.json, its tensors under Hugging Face names against the safetensors,
// and the image's soft tokens through the converted text model against the float64 reference logits, for
// every --outtype; then the files it must refuse, and llama.cpp's variants it must read.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "kernels/ops.h"
#include "kernels/thread_pool.h"
#include "loader/mmproj.h"
#include "loader/model_loader.h"
#include "models/gemma/model.h"
#include "models/siglip/model.h"
#include "tensor/dtype.h"
#include "gguf_edit.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using formats::GgufFile;
using formats::GgufValue;

const fs::path& fixture() {
  static const fs::path p = test::data_dir() / "gemma3-tiny-vision";
  return p;
}

struct Converted {
  fs::path text, mmproj;
};

// `gemma convert --mmproj` of the fixture, once per --outtype ("" for the default, bf16 here).
const Converted& converted(const std::string& outtype) {
  static test::ScratchDir dir;
  static std::map<std::string, Converted> done;
  if (const auto it = done.find(outtype); it != done.end()) return it->second;
  const std::string tag = outtype.empty() ? "default" : outtype;
  Converted c{dir.path() / ("text-" + tag + ".gguf"), dir.path() / ("mmproj-" + tag + ".gguf")};
  const auto r =
      test::run_gemma("convert " + fixture().string() + " -o " + c.text.string() +
                      (outtype.empty() ? "" : " --outtype " + outtype) + " --mmproj " + c.mmproj.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return done.emplace(outtype, c).first->second;
}

// The f32 text model: the logits then differ from the reference only by what the mmproj file holds.
const fs::path& text_model() {
  return converted("f32").text;
}

// The ids the caller finds in the text model's vocabulary.
siglip::Gemma3VisionConfig config_for(const loader::LoadedModel& m, const GgufFile& mmproj) {
  const auto id = [&](const char* piece) {
    const std::optional<int32_t> v = m.tokenizer.find(piece);
    EXPECT_TRUE(v) << piece;
    return v.value_or(-1);
  };
  return loader::vision_config_from_mmproj(mmproj, m.model->shape().hidden_size, m.dir.string(),
                                           id("<image_soft_token>"), id("<start_of_image>"),
                                           id("<end_of_image>"));
}

// The reference prompt's logits at every position, its image block encoded from `mmproj`.
std::vector<float> image_logits(const fs::path& mmproj) {
  kernels::ThreadPool pool(2);
  const loader::LoadedModel m = loader::load_model(text_model(), 256);
  auto file = std::make_unique<GgufFile>(mmproj);
  const siglip::Gemma3VisionConfig config = config_for(m, *file);
  const auto tensors = loader::hf_named_vision_tensors(std::move(file));
  const nn::LayerSource layers(*tensors);
  siglip::Gemma3VisionEncoder encoder(config, layers, /*norm_adds_one=*/false);

  const auto pixels = test::read_f32(fixture() / "reference_pixel_values.f32");
  std::vector<float> features(config.mm_tokens_per_image * config.text_hidden_size);
  encoder.encode(pixels.data(), pool, features.data());

  const auto ids = test::read_json(fixture() / "reference.json")["token_ids"].get<std::vector<int32_t>>();
  const auto first = std::find(ids.begin(), ids.end(), config.image_token_id) - ids.begin();
  const auto count = std::count(ids.begin(), ids.end(), config.image_token_id);
  EXPECT_EQ(count, config.mm_tokens_per_image);
  const models::EmbeddingBlock block{first, count, features.data()};
  const auto n = static_cast<int64_t>(ids.size());
  std::vector<float> logits(n * m.model->shape().vocab_size);
  auto cache = m.model->make_cache(n);
  m.model->forward(ids, 0, cache, pool, logits.data(), true, nullptr, std::span(&block, 1));
  return logits;
}

float logits_diff(const fs::path& mmproj) {
  const auto expected = test::read_f32(fixture() / "reference_logits.f32");
  const auto got = image_logits(mmproj);
  EXPECT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), std::min(got.size(), expected.size()));
  std::printf("%s: max |logit - reference| = %.3g\n", mmproj.filename().c_str(), diff);
  return diff;
}

std::vector<float> widened(const Tensor& t) {
  std::vector<float> out(t.numel());
  for (int64_t r = 0; r < t.rows(); ++r)
    kernels::dequantize_row(t, r, 1.0f, out.data() + r * (t.numel() / t.rows()));
  return out;
}

TEST(MmprojLoad, ConfigFromTheClipMetadataIsTheCheckpointsConfig) {
  const loader::LoadedModel m = loader::load_model(text_model(), 256);
  const GgufFile file(converted("f32").mmproj);
  const siglip::Gemma3VisionConfig got = config_for(m, file);
  const siglip::Gemma3VisionConfig want =
      siglip::resolve_gemma3_vision_config(test::read_json(fixture() / "config.json"), 64, "config.json");
  EXPECT_EQ(got.vision.hidden_size, 32);
  EXPECT_EQ(got.vision.hidden_size, want.vision.hidden_size);
  EXPECT_EQ(got.vision.intermediate_size, want.vision.intermediate_size);
  EXPECT_EQ(got.vision.num_layers, want.vision.num_layers);
  EXPECT_EQ(got.vision.num_heads, want.vision.num_heads);
  EXPECT_EQ(got.vision.num_channels, want.vision.num_channels);
  EXPECT_EQ(got.vision.image_size, want.vision.image_size);
  EXPECT_EQ(got.vision.patch_size, want.vision.patch_size);
  EXPECT_FLOAT_EQ(static_cast<float>(got.vision.layer_norm_eps), 1e-6f);
  // 16x16 patches pooled by the default factor 4 (the file has no scale_factor key).
  EXPECT_EQ(file.metadata().value("clip.vision.projector.scale_factor"), nullptr);
  EXPECT_EQ(got.mm_tokens_per_image, 16);
  EXPECT_EQ(got.text_hidden_size, 64);
  // The text vocabulary's ids are config.json's.
  EXPECT_EQ(got.image_token_id, 1024);
  EXPECT_EQ(got.boi_token_id, 1020);
  EXPECT_EQ(got.eoi_token_id, 1021);
  EXPECT_EQ(got.image_token_id, want.image_token_id);
  EXPECT_EQ(got.boi_token_id, want.boi_token_id);
  EXPECT_EQ(got.eoi_token_id, want.eoi_token_id);

  const loader::ImageNormalization norm = loader::image_normalization_from_mmproj(file);
  EXPECT_EQ(norm.mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(norm.std_dev, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
}

// Every vision and projector tensor of the checkpoint is found under its own name, with its shape and its
// values (as the file's type rounds them; the soft-embedding norm as w + 1).
TEST(MmprojLoad, EveryCheckpointTensorIsFoundUnderItsHuggingFaceName) {
  const formats::SafetensorsCheckpoint ckpt(fixture());
  const auto tensors = loader::hf_named_vision_tensors(std::make_unique<GgufFile>(converted("f32").mmproj));
  int found = 0;
  for (const Tensor* src : ckpt.all()) {
    if (src->name.find("language_model.") != std::string::npos) continue;
    const Tensor* t = tensors->find(src->name);
    ASSERT_TRUE(t) << src->name;
    ASSERT_EQ(t->shape, src->shape) << src->name;
    const float add = src->name.ends_with("mm_soft_emb_norm.weight") ? 1.0f : 0.0f;
    const auto want = widened(*src), got = widened(*t);
    for (size_t i = 0; i < want.size(); ++i) {
      const float w = t->dtype == DType::F16 ? f16_to_f32(f32_to_f16(want[i] + add)) : want[i] + add;
      ASSERT_EQ(got[i], w) << src->name << "[" << i << "]";
    }
    ++found;
  }
  EXPECT_EQ(found, 3 + 16 * 2 + 4);
  EXPECT_EQ(tensors->all().size(), static_cast<size_t>(found));
}

// f32 and the default (the checkpoint's bf16) hold the weights exactly, f16 holds these bf16 values exactly
// too (the input projection is f16 in every file): all land where the safetensors folder does.
TEST(MmprojLoad, F32ImageLogitsMatchTheReference) {
  EXPECT_LT(logits_diff(converted("f32").mmproj), 1e-3f);
}
TEST(MmprojLoad, DefaultTypeImageLogitsMatchTheReference) {
  EXPECT_LT(logits_diff(converted("").mmproj), 1e-3f);
}
TEST(MmprojLoad, F16ImageLogitsMatchTheReference) {
  EXPECT_LT(logits_diff(converted("f16").mmproj), 1e-3f);
}
TEST(MmprojLoad, Bf16ImageLogitsMatchTheReference) {
  EXPECT_LT(logits_diff(converted("bf16").mmproj), 1e-3f);
}
// The block formats round the tower's matrices (q8_0 by 0.5% rms, q4_0 by 9%), which this random tiny model
// amplifies: 0.079 and 1.57 from the reference, bounded at about 2x. That the rest is rounding and not
// misreading: the blocks give the logits of their own values written out as f32.
void expect_quantized(const std::string& type, float bound) {
  test::ScratchDir dir;
  const fs::path q = converted(type).mmproj, f32 = dir.path() / (type + "-as-f32.gguf");
  const GgufFile g(q);
  formats::GgufWriter w;
  for (const auto& [k, v] : g.metadata().entries()) w.add(k, v);
  std::vector<std::vector<float>> values;
  int quantized = 0;
  for (const Tensor* t : g.all()) {
    quantized += t->dtype != DType::F32 && t->dtype != DType::F16;
    values.push_back(widened(*t));
    w.add_tensor(t->name, DType::F32, t->shape);
  }
  EXPECT_EQ(quantized, 6 * 2) << type << ": q, k, v, out, fc1, fc2 of both layers";
  w.write(f32, [&](size_t i, std::ostream& os) {
    os.write(reinterpret_cast<const char*>(values[i].data()),
             static_cast<std::streamsize>(values[i].size() * 4));
  });
  EXPECT_LT(logits_diff(q), bound);
  const auto got = image_logits(q), want = image_logits(f32);
  const float diff = test::max_abs_diff(got.data(), want.data(), got.size());
  std::printf("%s: max |logit - its values as f32| = %.3g\n", q.filename().c_str(), diff);
  EXPECT_LT(diff, 1e-4f);
}
TEST(MmprojLoad, Q8_0ImageLogitsAreThoseOfItsRoundedWeights) {
  expect_quantized("q8_0", 0.16f);
}
TEST(MmprojLoad, Q4_0ImageLogitsAreThoseOfItsRoundedWeights) {
  expect_quantized("q4_0", 3.0f);
}

// llama.cpp's first Gemma 3 script wrote fc1 as ffn_down and fc2 as ffn_up; llama.cpp swaps them back by
// shape, and so must we.
TEST(MmprojLoad, LegacySwappedFfnNamesAreSwappedBack) {
  test::ScratchDir dir;
  const fs::path legacy = dir.path() / "legacy.gguf";
  test::rewrite_gguf(converted("f32").mmproj, legacy, {}, [](const std::string& name) {
    std::string n = name;
    if (const auto at = n.find("ffn_up"); at != std::string::npos)
      n.replace(at, 6, "ffn_down");
    else if (const auto at2 = n.find("ffn_down"); at2 != std::string::npos)
      n.replace(at2, 8, "ffn_up");
    return n;
  });
  const auto tensors = loader::hf_named_vision_tensors(std::make_unique<GgufFile>(legacy));
  const Tensor* fc1 = tensors->find("vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight");
  ASSERT_TRUE(fc1);
  EXPECT_EQ(fc1->name, "v.blk.1.ffn_down.weight");
  EXPECT_EQ(fc1->shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(tensors->find("vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias")->name,
            "v.blk.1.ffn_up.bias");
  EXPECT_LT(logits_diff(legacy), 1e-3f);
}

TEST(MmprojLoad, ScaleFactorSetsTheTokensPerImageAndMeanStdAreReadInOrder) {
  test::ScratchDir dir;
  const fs::path edited = dir.path() / "edited.gguf";
  const std::vector<float> mean = {0.48145466f, 0.4578275f, 0.40821073f},
                           stdev = {0.26862954f, 0.26130258f, 0.27577711f};
  for (const auto& [factor, tokens] :
       std::vector<std::pair<uint32_t, int64_t>>{{1, 256}, {2, 64}, {8, 4}, {16, 1}}) {
    test::rewrite_gguf(converted("f32").mmproj, edited,
                 {{"clip.vision.projector.scale_factor", GgufValue(factor)},
                  {"clip.vision.image_mean", GgufValue(mean)},
                  {"clip.vision.image_std", GgufValue(stdev)}});
    const GgufFile file(edited);
    EXPECT_EQ(loader::vision_config_from_mmproj(file, 64, "text.gguf", 1, 2, 3).mm_tokens_per_image, tokens)
        << "scale_factor " << factor;
    const loader::ImageNormalization norm = loader::image_normalization_from_mmproj(file);
    EXPECT_EQ(norm.mean, (std::array<float, 3>{mean[0], mean[1], mean[2]}));
    EXPECT_EQ(norm.std_dev, (std::array<float, 3>{stdev[0], stdev[1], stdev[2]}));
  }
  test::rewrite_gguf(converted("f32").mmproj, edited,
               {{"clip.vision.projector.scale_factor", GgufValue(uint32_t{3})}});
  const std::string e =
      test::error_of([&] { loader::vision_config_from_mmproj(GgufFile(edited), 64, "text.gguf", 1, 2, 3); });
  EXPECT_NE(e.find(edited.string() +
                   ": clip.vision.projector.scale_factor 3 does not divide the 16 patches per side"),
            std::string::npos)
      << e;
}

TEST(MmprojLoad, ATextGgufIsNotAnMmproj) {
  const fs::path text = text_model();
  const std::string want = text.string() + ": general.architecture 'gemma3' is not 'clip'";
  const std::string e1 =
      test::error_of([&] { loader::vision_config_from_mmproj(GgufFile(text), 64, "x", 1, 2, 3); });
  EXPECT_NE(e1.find(want), std::string::npos) << e1;
  const std::string e2 =
      test::error_of([&] { loader::hf_named_vision_tensors(std::make_unique<GgufFile>(text)); });
  EXPECT_NE(e2.find(want), std::string::npos) << e2;
}

TEST(MmprojLoad, AProjectionThatMissesTheTextHiddenSizeNamesBothFiles) {
  const fs::path mmproj = converted("f32").mmproj;
  const std::string e = test::error_of(
      [&] { loader::vision_config_from_mmproj(GgufFile(mmproj), 1152, "gemma-3-1b.gguf", 1, 2, 3); });
  EXPECT_EQ(e,
            mmproj.string() +
                ": clip.vision.projection_dim 64 is not the text model's hidden size 1152 (gemma-3-1b.gguf)");
}

TEST(MmprojLoad, OtherProjectorsNoVisionEncoderAndStrangeTensorsAreRefused) {
  test::ScratchDir dir;
  const fs::path edited = dir.path() / "edited.gguf";
  const auto config_error = [&] {
    return test::error_of(
        [&] { loader::vision_config_from_mmproj(GgufFile(edited), 64, "text.gguf", 1, 2, 3); });
  };
  test::rewrite_gguf(converted("f32").mmproj, edited,
               {{"clip.projector_type", GgufValue(std::string("idefics3"))}});
  EXPECT_EQ(config_error(),
            edited.string() +
                ": clip.projector_type 'idefics3' is not 'gemma3' (only Gemma 3's projector is supported)");
  // The per-modality key wins over the shared one, as in llama.cpp.
  test::rewrite_gguf(converted("f32").mmproj, edited,
               {{"clip.vision.projector_type", GgufValue(std::string("gemma3nv"))}});
  EXPECT_NE(config_error().find("clip.vision.projector_type 'gemma3nv' is not 'gemma3'"), std::string::npos);
  test::rewrite_gguf(converted("f32").mmproj, edited, {{"clip.has_vision_encoder", GgufValue(false)}});
  EXPECT_NE(config_error().find(edited.string() + ": clip.has_vision_encoder is false or missing"),
            std::string::npos);
  test::rewrite_gguf(converted("f32").mmproj, edited, {{"clip.has_vision_encoder", std::nullopt}});
  EXPECT_NE(config_error().find("clip.has_vision_encoder is false or missing"), std::string::npos);

  // SigLIP's pooling head: Gemma 3 never runs it, so a file holding it is not a Gemma 3 projector file.
  test::rewrite_gguf(converted("f32").mmproj, edited, {}, [](const std::string& name) {
    return name == "v.post_ln.bias" ? std::string("v.head.bias") : name;
  });
  const std::string e =
      test::error_of([&] { loader::hf_named_vision_tensors(std::make_unique<GgufFile>(edited)); });
  EXPECT_EQ(e, edited.string() + ": tensor 'v.head.bias' is not part of a Gemma 3 vision tower or projector");
}

}  // namespace
}  // namespace ge
