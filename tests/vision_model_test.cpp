// Gemma 3 with its vision tower (SigLIP + projector) against the float64 reference of the multimodal
// fixture: logits and every layer's residual stream with the image's soft tokens in the prompt, and
// chunked prefill that would cut the image block.
#include <gtest/gtest.h>

#include "formats/safetensors.h"
#include "kernels/thread_pool.h"
#include "loader/model_loader.h"
#include "models/gemma/model.h"
#include "models/siglip/model.h"
#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

namespace ge {
namespace {

constexpr float kTolerance = 1e-3f;  // the bar

struct VisionFixture {
  explicit VisionFixture(int64_t max_chunk = 256)
      : dir(test::data_dir() / "gemma3-tiny-vision"),
        ckpt(dir),
        layers(ckpt),
        model(loader::load_config(dir), layers, max_chunk),
        encoder(siglip::resolve_gemma3_vision_config(test::read_json(dir / "config.json"),
                                                     model.shape().hidden_size, "config.json"),
                layers),
        reference(test::read_json(dir / "reference.json")),
        ids(reference["token_ids"].get<std::vector<int32_t>>()),
        pixels(test::read_f32(dir / "reference_pixel_values.f32")) {}

  // The block of soft tokens: the one run of <image_soft_token> ids in the prompt.
  models::EmbeddingBlock image_block(kernels::ThreadPool& pool) {
    const int32_t image_token = encoder.config().image_token_id;
    features.resize(encoder.config().mm_tokens_per_image * encoder.config().text_hidden_size);
    encoder.encode(pixels.data(), pool, features.data());
    const auto first = std::find(ids.begin(), ids.end(), image_token) - ids.begin();
    const auto count = std::count(ids.begin(), ids.end(), image_token);
    return {first, count, features.data()};
  }

  std::vector<float> logits(kernels::ThreadPool& pool, const models::HiddenObserver* observer = nullptr) {
    const models::EmbeddingBlock block = image_block(pool);
    const auto n = static_cast<int64_t>(ids.size());
    std::vector<float> out(n * model.shape().vocab_size);
    auto cache = model.make_cache(n);
    model.forward(ids, 0, cache, pool, out.data(), true, observer, std::span(&block, 1));
    return out;
  }

  std::filesystem::path dir;
  formats::SafetensorsCheckpoint ckpt;
  nn::LayerSource layers;
  gemma::Model model;
  siglip::Gemma3VisionEncoder encoder;
  nlohmann::json reference;
  std::vector<int32_t> ids;
  std::vector<float> pixels, features;
};

TEST(Gemma3VisionModel, LogitsWithTheImageMatchTheReferenceAtEveryPosition) {
  kernels::ThreadPool pool(2);
  VisionFixture f;
  const auto expected = test::read_f32(f.dir / "reference_logits.f32");
  const auto got = f.logits(pool);
  ASSERT_EQ(got.size(), expected.size());
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  std::printf("gemma3-tiny-vision: max |logit - reference| = %.3g\n", diff);
  EXPECT_LT(diff, kTolerance);
}

TEST(Gemma3VisionModel, EveryLayerMatchesTheReferenceResidualStream) {
  kernels::ThreadPool pool(2);
  VisionFixture f;
  const auto expected = test::read_f32(f.dir / "reference_hidden.f32");
  const int64_t n = static_cast<int64_t>(f.ids.size()), hidden = f.model.shape().hidden_size;
  ASSERT_EQ(expected.size(), static_cast<size_t>((f.model.config().num_layers + 1) * n * hidden));
  int64_t seen = 0;
  models::HiddenObserver observer = [&](int64_t index, const float* h, int64_t start, int64_t count) {
    ASSERT_EQ(count, n);
    EXPECT_LT(test::max_abs_diff(h, expected.data() + index * n * hidden, n * hidden), kTolerance)
        << "residual stream diverges at index " << index;
    ++seen;
  };
  f.logits(pool, &observer);
  EXPECT_EQ(seen, f.model.config().num_layers + 1);
}

// Chunks of 4, 5 and 7 tokens would cut the 16-token image block (at 6..21); the block must still
// attend as one, so the logits stay the reference's. 16 and 22 put a boundary right at its edges.
TEST(Gemma3VisionModel, ChunkSizesThatCutTheImageBlockKeepTheReferenceLogits) {
  kernels::ThreadPool pool(2);
  const auto expected = test::read_f32(test::data_dir() / "gemma3-tiny-vision" / "reference_logits.f32");
  for (int64_t chunk : {1, 4, 5, 7, 16, 22}) {
    VisionFixture f(chunk);
    EXPECT_EQ(f.model.chunk_capacity(), std::max<int64_t>(chunk, 16));
    const auto got = f.logits(pool);
    EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), kTolerance) << "chunk " << chunk;
  }
}

// Without the image block, soft tokens are ordinary causal tokens: the image's first soft token would
// not see the last one. The reference's logits there differ, which proves the block is bidirectional.
TEST(Gemma3VisionModel, TheBlockIsWhatMakesImageTokensAttendBothWays) {
  kernels::ThreadPool pool(2);
  VisionFixture f;
  const models::EmbeddingBlock block = f.image_block(pool);
  const auto n = static_cast<int64_t>(f.ids.size()), vocab = f.model.shape().vocab_size;
  std::vector<float> one_way(n * vocab), both_ways(n * vocab);
  std::vector<models::EmbeddingBlock> singles;
  for (int64_t i = 0; i < block.count; ++i)
    singles.push_back({block.offset + i, 1, block.embeddings + i * f.model.shape().hidden_size});
  auto cache = f.model.make_cache(n);
  f.model.forward(f.ids, 0, cache, pool, one_way.data(), true, nullptr, singles);
  f.model.forward(f.ids, 0, cache, pool, both_ways.data(), true, nullptr, std::span(&block, 1));
  const int64_t first_image_row = block.offset * vocab;
  EXPECT_GT(test::max_abs_diff(one_way.data() + first_image_row, both_ways.data() + first_image_row, vocab), 1e-3f);
  EXPECT_EQ(test::max_abs_diff(one_way.data(), both_ways.data(), first_image_row), 0.0f);
}

TEST(Gemma3VisionModel, BlocksOutOfOrderOrPastTheTokensAreRejected) {
  kernels::ThreadPool pool(2);
  VisionFixture f;
  const models::EmbeddingBlock block = f.image_block(pool);
  const auto n = static_cast<int64_t>(f.ids.size());
  std::vector<float> out(f.model.shape().vocab_size);
  auto cache = f.model.make_cache(n);
  const models::EmbeddingBlock past{n - 2, 16, block.embeddings};
  EXPECT_THROW(f.model.forward(f.ids, 0, cache, pool, out.data(), false, nullptr, std::span(&past, 1)),
               std::invalid_argument);
  const models::EmbeddingBlock overlapping[] = {block, {block.offset + 1, 2, block.embeddings}};
  EXPECT_THROW(f.model.forward(f.ids, 0, cache, pool, out.data(), false, nullptr, overlapping), std::invalid_argument);
}

// The generator finds the image's run of soft tokens, encodes the image once and, on the next turn of the
// same conversation, reuses the cached prefix image and all; a different image at the same place is
// encoded again and the cache is reused only up to its block.
TEST(Gemma3VisionGenerator, ImagesInTheCacheAreNotEncodedAgain) {
  kernels::ThreadPool pool(2);
  VisionFixture f;
  const Tokenizer tokenizer = Tokenizer::load(f.dir);
  runtime::Generator generator(f.model, tokenizer, pool);
  generator.set_vision_encoder(&f.encoder);
  runtime::Slot slot(f.model, 128);
  const runtime::PromptImage image{f.pixels.data(), runtime::image_digest(f.pixels)};
  const auto expected = test::read_f32(f.dir / "reference_logits.f32");
  const int64_t vocab = f.model.shape().vocab_size, n = static_cast<int64_t>(f.ids.size());

  runtime::GenerateStats first;
  const auto logits = generator.ingest(slot, f.ids, &first, std::span(&image, 1));
  EXPECT_LT(test::max_abs_diff(logits.data(), expected.data() + (n - 1) * vocab, vocab), kTolerance);
  EXPECT_EQ(first.images_encoded, 1);

  std::vector<int32_t> longer = f.ids;
  longer.insert(longer.end(), {300, 301});
  runtime::GenerateStats second;
  generator.ingest(slot, longer, &second, std::span(&image, 1));
  EXPECT_EQ(second.images_encoded, 0);
  EXPECT_EQ(second.reused_tokens, n);

  std::vector<float> other = f.pixels;
  other[0] += 0.5f;
  const runtime::PromptImage changed{other.data(), runtime::image_digest(other)};
  runtime::GenerateStats third;
  generator.ingest(slot, longer, &third, std::span(&changed, 1));
  EXPECT_EQ(third.images_encoded, 1);
  EXPECT_EQ(third.reused_tokens, 6);  // up to <start_of_image>
}

TEST(Gemma3VisionGenerator, ImageCountsThatDoNotMatchThePromptAreErrors) {
  kernels::ThreadPool pool(2);
  VisionFixture f;
  const Tokenizer tokenizer = Tokenizer::load(f.dir);
  runtime::Generator generator(f.model, tokenizer, pool);
  runtime::Slot slot(f.model, 128);
  const runtime::PromptImage image{f.pixels.data(), runtime::image_digest(f.pixels)};
  EXPECT_NE(test::error_of([&] { generator.ingest(slot, f.ids, nullptr, std::span(&image, 1)); }).find("reads no images"), std::string::npos);
  generator.set_vision_encoder(&f.encoder);
  EXPECT_NE(test::error_of([&] { generator.ingest(slot, f.ids, nullptr, {}); }).find("the prompt has 1 image(s)"), std::string::npos);
  std::vector<int32_t> short_run = f.ids;
  short_run.erase(short_run.begin() + 7);
  EXPECT_NE(test::error_of([&] { generator.ingest(slot, short_run, nullptr, std::span(&image, 1)); }).find("has 15 <image_soft_token> ids; an image is 16"), std::string::npos);
}

}  // namespace
}  // namespace ge
