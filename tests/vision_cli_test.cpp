// Images end to end through the `gemma` binary: logits with an image against the float64 reference, the
// processor's pixel values, a chat turn with an image, and the errors a user can provoke.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace ge {
namespace {

std::filesystem::path fixture() { return test::data_dir() / "gemma3-tiny-vision"; }
std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }
std::string image() { return quoted(fixture() / "reference_image.png"); }

std::vector<int32_t> reference_ids() {
  return test::read_json(fixture() / "reference.json")["token_ids"].get<std::vector<int32_t>>();
}

std::string joined(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

// The f32 file `out` against the fixture's `reference`: same size and every value within `tolerance`.
::testing::AssertionResult matches_reference(const std::filesystem::path& out, const std::string& reference,
                                             float tolerance) {
  const auto got = test::read_f32(out);
  const auto expected = test::read_f32(fixture() / reference);
  if (got.size() != expected.size())
    return ::testing::AssertionFailure() << got.size() << " values, " << reference << " has " << expected.size();
  const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
  if (diff < tolerance) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |diff| " << diff << " to " << reference << " >= " << tolerance;
}

TEST(VisionCli, LogitsWithAnImageMatchTheReference) {
  test::ScratchDir dir;
  const auto out = dir.path() / "logits.f32";
  // -b 5 cuts the image block; it must still run as one.
  const auto r = test::run_gemma("logits --exact -m " + quoted(fixture()) + " --ids " + joined(reference_ids()) +
                                 " --image " + image() + " -o " + quoted(out) + " -t 2 -b 5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(matches_reference(out, "reference_logits.f32", 1e-3f));
}

// The same from the f32 GGUF + mmproj pair `gemma convert` writes (the pair llama.cpp's mtmd reads).
TEST(VisionCli, LogitsFromAGgufAndItsMmprojMatchTheReference) {
  test::ScratchDir dir;
  const auto text = dir.path() / "text.gguf", mmproj = dir.path() / "mmproj.gguf", out = dir.path() / "logits.f32";
  const auto c = test::run_gemma("convert " + quoted(fixture()) + " -o " + quoted(text) + " --outtype f32 --mmproj " +
                                 quoted(mmproj));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const auto r = test::run_gemma("logits --exact -m " + quoted(text) + " --mmproj " + quoted(mmproj) + " --ids " +
                                 joined(reference_ids()) + " --image " + image() + " -o " + quoted(out) + " -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(matches_reference(out, "reference_logits.f32", 1e-3f));
  const auto no_mmproj = test::run_gemma("run -m " + quoted(text) + " --image " + image() + " -p hi -n 1");
  EXPECT_NE(no_mmproj.exit_code, 0);
  EXPECT_NE(no_mmproj.output.find("--mmproj"), std::string::npos) << no_mmproj.output;
}

// transformers >= 4.52 saves Gemma3ForConditionalGeneration as model.vision_tower.*,
// model.multi_modal_projector.* and model.language_model.*: the same weights must give the same logits.
TEST(VisionCli, TheNestedLayoutOfNewerTransformersLoadsToo) {
  test::ScratchDir dir;
  test::copy_files(fixture(), dir.path());
  test::edit_safetensors_header(dir.path() / "model.safetensors", [](nlohmann::json& header) {
    nlohmann::json renamed;
    for (auto& [name, info] : header.items()) {
      std::string to = name;
      if (name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector."))
        to = "model." + name;
      else if (name.starts_with("language_model.model."))
        to = "model.language_model." + name.substr(std::string("language_model.model.").size());
      renamed[to] = info;
    }
    header = renamed;
  });
  const auto out = dir.path() / "logits.f32";
  const auto r = test::run_gemma("logits --exact -m " + quoted(dir.path()) + " --ids " + joined(reference_ids()) +
                                 " --image " + image() + " -o " + quoted(out) + " -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(matches_reference(out, "reference_logits.f32", 1e-3f));
}

TEST(VisionCli, PreprocessWritesTheProcessorsPixelValues) {
  test::ScratchDir dir;
  const auto out = dir.path() / "pixels.f32";
  const auto r = test::run_gemma("preprocess -m " + quoted(fixture()) + " --image " + image() + " -o " + quoted(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("shape: [1, 3, 224, 224]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("<start_of_image><image_soft_token>"), std::string::npos) << r.output;
  EXPECT_TRUE(matches_reference(out, "reference_pixel_values.f32", 1e-6f));
}

// The fixture's prompt is Gemma3Processor's rendering of one user turn [image, "What is shown in this
// picture?"]; `run` must build the same 46 tokens and, greedy, answer with the reference's top token.
TEST(VisionCli, ChatWithAnImageRunsTheProcessorsPrompt) {
  const auto ids = reference_ids();
  const auto expected = test::read_f32(fixture() / "reference_logits.f32");
  const size_t vocab = expected.size() / ids.size();
  const float* last = expected.data() + (ids.size() - 1) * vocab;
  const auto top = std::max_element(last, last + vocab) - last;
  const auto r = test::run_gemma("run -m " + quoted(fixture()) + " --image " + image() +
                                 " -p 'What is shown in this picture?' -n 1 --temp 0 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("prompt eval count:    46 token(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("image encode:         1 image(s)"), std::string::npos) << r.output;
  const int32_t answer[] = {static_cast<int32_t>(top)};
  const std::string text = Tokenizer::load(fixture()).decode(answer);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(r.output.rfind(text + "\n", 0), 0u) << "expected the answer '" << text << "' first:\n" << r.output;
}

TEST(VisionCli, TheReplAttachesImagesToTheNextMessageAndEncodesThemOnce) {
  test::ScratchDir dir;
  const auto input = dir.path() / "input.txt";
  const std::string lines = "/image " + (fixture() / "reference_image.png").string() + "\nWhat is it?\nAnd now?\n/bye\n";
  test::write_bytes(input, std::vector<char>(lines.begin(), lines.end()));
  const auto r = test::run_gemma("run -m " + quoted(fixture()) + " -n 2 --temp 0 -t 2", input.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("attached"), std::string::npos) << r.output;
  // The first turn encodes the image; the second reuses the cached prefix, image included.
  const auto first = r.output.find("image encode:         1 image(s)");
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("image encode:", first + 1), std::string::npos) << r.output;
}

TEST(VisionCli, BenchReportsTheEncoderAndTheImagePrefill) {
  const auto r = test::run_gemma("bench -m " + quoted(fixture()) + " --image " + image() + " -r 2 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("image encode (2 layers, hidden 32, 256 patches of 224x224"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("image prefill: 18 tokens"), std::string::npos) << r.output;
}

TEST(VisionCli, ImagesForATextOnlyModelAreRefusedByName) {
  const auto r = test::run_gemma("run -m " + quoted(test::demo_model_dir()) + " --image " + image() + " -p hi -n 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("reads text only"), std::string::npos) << r.output;
}

TEST(VisionCli, ACorruptImageIsAnErrorNamingTheFile) {
  test::ScratchDir dir;
  const auto bad = dir.path() / "broken.png";
  auto bytes = test::read_bytes(fixture() / "reference_image.png");
  bytes.resize(bytes.size() / 2);
  test::write_bytes(bad, bytes);
  const auto r = test::run_gemma("run -m " + quoted(fixture()) + " --image " + quoted(bad) + " -p hi -n 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("broken.png"), std::string::npos) << r.output;
}

TEST(VisionCli, MoreImagesThanSoftTokenRunsIsAnError) {
  const auto r = test::run_gemma("logits --exact -m " + quoted(fixture()) + " --ids " + joined(reference_ids()) + " --image " +
                                 image() + " --image " + image() + " -o /dev/null");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("the prompt has 1 image(s)"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ge
