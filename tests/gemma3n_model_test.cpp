// Gemma 3n's text decoder against the float64 reference (tools/ref_gemma3n.py, transformers' semantics):
// logits at every position, the AltUp streams after every layer, chunked prefill against stepwise decoding
// (across the sliding window and the KV-shared layers), batched decode, and the GGUF `gemma convert` writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "convert/gguf_convert.h"
#include "kernels/thread_pool.h"
#include "loader/model_loader.h"
#include "models/gemma3n/model.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

fs::path fixture() { return test::data_dir() / "gemma3n-tiny"; }

std::vector<int32_t> reference_ids() {
  return test::read_json(fixture() / "reference.json")["token_ids"].get<std::vector<int32_t>>();
}

std::vector<float> all_logits(loader::LoadedModel& m, const std::vector<int32_t>& ids,
                              kernels::Precision precision = kernels::Precision::kExact) {
  kernels::ThreadPool pool(2);
  m.model->set_prefill_precision(precision);
  m.model->set_decode_precision(precision);
  auto cache = m.model->make_cache(static_cast<int64_t>(ids.size()));
  std::vector<float> logits(ids.size() * m.model->shape().vocab_size);
  m.model->forward(ids, 0, cache, pool, logits.data(), true);
  return logits;
}

// Token by token through decode(): one row per step.
std::vector<float> stepwise_logits(loader::LoadedModel& m, const std::vector<int32_t>& ids) {
  kernels::ThreadPool pool(2);
  const int64_t vocab = m.model->shape().vocab_size;
  auto cache = m.model->make_cache(static_cast<int64_t>(ids.size()));
  std::vector<float> logits(ids.size() * vocab);
  for (size_t t = 0; t < ids.size(); ++t) {
    const models::DecodeRow row{ids[t], static_cast<int64_t>(t), &cache};
    m.model->decode(std::span(&row, 1), pool, logits.data() + t * vocab);
  }
  return logits;
}

TEST(Gemma3nModel, LogitsMatchTheFloat64ReferenceAtEveryPosition) {
  auto m = loader::load_model(fixture(), 256);
  EXPECT_STREQ(m.model->family_name(), "gemma3n");
  const auto logits = all_logits(m, reference_ids());
  const float d = test::max_abs_diff(logits, test::read_f32(fixture() / "reference_logits.f32"));
  std::printf("gemma3n-tiny: max |logit - float64 reference| = %.3g\n", d);
  EXPECT_LT(d, 1e-3f);
}

TEST(Gemma3nModel, AltUpStreamsMatchTheReferenceAfterEveryLayer) {
  auto m = loader::load_model(fixture(), 256);
  const auto ids = reference_ids();
  const auto& c = dynamic_cast<gemma3n::Model&>(*m.model).config();
  const auto n = static_cast<int64_t>(ids.size());
  const int64_t per_index = c.altup_num_inputs * n * c.hidden_size;
  const auto reference = test::read_f32(fixture() / "reference_hidden.f32");
  ASSERT_EQ(static_cast<int64_t>(reference.size()), (c.num_layers + 1) * per_index);
  std::vector<int64_t> seen;
  const models::HiddenObserver observer = [&](int64_t index, const float* hidden, int64_t start, int64_t rows) {
    ASSERT_EQ(start, 0);
    ASSERT_EQ(rows, n);
    float d = 0, scale = 1;
    for (int64_t i = 0; i < per_index; ++i) {
      const float want = reference[index * per_index + i];
      d = std::max(d, std::abs(hidden[i] - want));
      scale = std::max(scale, std::abs(want));
    }
    EXPECT_LT(d, 1e-4f * scale) << "streams after index " << index;
    seen.push_back(index);
  };
  kernels::ThreadPool pool(2);
  auto cache = m.model->make_cache(n);
  std::vector<float> logits(m.model->shape().vocab_size);
  m.model->forward(ids, 0, cache, pool, logits.data(), false, &observer);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), c.num_layers + 1);
}

// The fixture's window is 8 and its last 5 layers read layers 3 and 4's caches: 24 tokens in chunks of 5
// run every sliding ring past its window and every shared layer on a cache written by the same chunk.
TEST(Gemma3nModel, ChunkedPrefillEqualsStepwiseDecoding) {
  auto chunked = loader::load_model(fixture(), 5);
  const auto ids = reference_ids();
  const auto prefill = all_logits(chunked, ids);
  const auto steps = stepwise_logits(chunked, ids);
  EXPECT_LT(test::max_abs_diff(prefill, steps), 2e-5f);
  EXPECT_LT(test::max_abs_diff(prefill, test::read_f32(fixture() / "reference_logits.f32")), 1e-3f);
}

TEST(Gemma3nModel, BatchedDecodeEqualsLoneStepsBitForBit) {
  auto m = loader::load_model(fixture(), 256);
  kernels::ThreadPool pool(2);
  const int64_t vocab = m.model->shape().vocab_size;
  const auto ids = reference_ids();
  std::vector<nn::KVCache> caches;
  for (int i = 0; i < 3; ++i) caches.push_back(m.model->make_cache(32));
  // Three sequences at different lengths, then one batched step of all three.
  std::vector<float> scratch(16 * vocab);
  for (int i = 0; i < 3; ++i)
    m.model->forward(std::span(ids).first(5 + 4 * i), 0, caches[i], pool, scratch.data(), false);
  std::vector<nn::KVCache> lone = caches;
  std::vector<models::DecodeRow> rows;
  for (int i = 0; i < 3; ++i) rows.push_back({ids[10 + i], 5 + 4 * i, &caches[i]});
  std::vector<float> batched(3 * vocab), single(vocab);
  m.model->decode(rows, pool, batched.data());
  for (int i = 0; i < 3; ++i) {
    m.model->forward(std::span(&ids[10 + i], 1), 5 + 4 * i, lone[i], pool, single.data(), false);
    EXPECT_TRUE(std::equal(single.begin(), single.end(), batched.begin() + i * vocab)) << "row " << i;
  }
}

TEST(Gemma3nModel, GgufFromConvertGivesTheFolderLogits) {
  test::ScratchDir dir;
  auto folder = loader::load_model(fixture(), 256);
  const auto ids = reference_ids();
  const auto want = all_logits(folder, ids);
  const auto reference = test::read_f32(fixture() / "reference_logits.f32");
  // The same weights; the file stores the vectors and small matrices in f32, whose kernels sum in another
  // order than the folder's bf16 ones (~1e-5).
  for (const auto type : {convert::OutType::BF16, convert::OutType::F32}) {
    const fs::path file = dir.path() / (std::string(convert::out_type_name(type)) + ".gguf");
    convert::ConvertOptions options;
    options.out_type = type;
    convert::convert_to_gguf(fixture(), file, options);
    auto gguf = loader::load_model(file, 256);
    EXPECT_STREQ(gguf.model->family_name(), "gemma3n");
    const auto logits = all_logits(gguf, ids);
    const float d = test::max_abs_diff(logits, want);
    std::printf("gemma3n-tiny %s GGUF: max |logit - folder| = %.3g\n", convert::out_type_name(type).data(), d);
    EXPECT_LE(d, 5e-5f) << convert::out_type_name(type);
    EXPECT_LT(test::max_abs_diff(logits, reference), 1e-3f) << convert::out_type_name(type);
  }
}

TEST(Gemma3nModel, FolderWithoutItsPerLayerTablesIsAnErrorNamingTheTensor) {
  for (const std::string missing : {"embed_tokens_per_layer", "per_layer_model_projection"}) {
    test::ScratchDir dir;
    test::copy_files(fixture(), dir.path());
    test::edit_safetensors_header(dir.path() / "model.safetensors", [&](nlohmann::json& h) {
      ASSERT_EQ(h.erase("model.language_model." + missing + ".weight"), 1u);
    });
    const std::string err = test::error_of([&] { loader::load_model(dir.path(), 256); });
    EXPECT_NE(err.find(missing), std::string::npos) << err;
  }
}

TEST(Gemma3nModel, ImageEmbeddingsAndOutOfRangeIdsAreRefused) {
  auto m = loader::load_model(fixture(), 256);
  kernels::ThreadPool pool(1);
  auto cache = m.model->make_cache(8);
  std::vector<float> logits(m.model->shape().vocab_size), rows(2 * m.model->shape().hidden_size);
  const std::vector<int32_t> ids = {2, 5};
  const models::EmbeddingBlock block{0, 2, rows.data()};
  EXPECT_NE(test::error_of([&] { m.model->forward(ids, 0, cache, pool, logits.data(), false, nullptr, std::span(&block, 1)); })
                .find("not supported"),
            std::string::npos);
  const std::vector<int32_t> bad = {2, static_cast<int32_t>(m.model->shape().vocab_size)};
  EXPECT_NE(test::error_of([&] { m.model->forward(bad, 0, cache, pool, logits.data(), false); }).find("outside"),
            std::string::npos);
}

}  // namespace
}  // namespace ge
