// The `gemma` binary end to end: what a user types, what exit code and message come back.
#include <gtest/gtest.h>

#include <cstdio>
#include <sys/wait.h>

#include "test_util.h"

namespace ge {
namespace {

using Result = test::GemmaRun;

Result gemma(const std::string& args, const std::string& stdin_file = "/dev/null") {
  return test::run_gemma(args, stdin_file);
}

std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

std::string ids_of(const std::string& fixture) {
  const auto ids = test::read_json(test::fixture_reference_dir(fixture) / "reference.json")["token_ids"];
  std::string s;
  for (const auto& id : ids) s += (s.empty() ? "" : ",") + std::to_string(id.get<int>());
  return s;
}

class CliLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(CliLogits, ReproduceTheReferenceWithinTolerance) {
  test::ScratchDir dir;
  const auto out = dir.path() / "logits.f32";
  const auto r = gemma("logits --exact -m " + quoted(test::fixture_model_dir(GetParam())) + " --ids " + ids_of(GetParam()) +
                       " -o " + quoted(out) + " -t 2 -b 7");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto got = test::read_f32(out);
  const auto expected = test::read_f32(test::fixture_reference_dir(GetParam()) / "reference_logits.f32");
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), 1e-3f);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CliLogits,
                         ::testing::Values("gemma3-tiny", "gemma3-tiny-rope", "gemma-tiny", "gemma2-tiny",
                                           "gemma3n-tiny", "gemma4-tiny"));

// --head-type: only the LM head is rounded (the embedding lookups still read the bf16 table), so the logits
// move by about what Q8_0 rounding of the head moves them (gemma3-tiny-rope: 0.048; q4_0: 0.77).
TEST(Cli, QuantizedHeadCopyMovesTheLogitsALittle) {
  test::ScratchDir dir;
  const auto expected = test::read_f32(test::fixture_reference_dir("gemma3-tiny-rope") / "reference_logits.f32");
  for (const auto& [type, bound] : {std::pair{"q8_0", 0.1f}, std::pair{"q4_0", 1.5f}}) {
    const auto out = dir.path() / (std::string(type) + ".f32");
    const auto r = gemma("logits --exact --head-type " + std::string(type) + " -m " +
                         quoted(test::fixture_model_dir("gemma3-tiny-rope")) + " --ids " + ids_of("gemma3-tiny-rope") +
                         " -o " + quoted(out) + " -t 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto got = test::read_f32(out);
    ASSERT_EQ(got.size(), expected.size());
    const float diff = test::max_abs_diff(got.data(), expected.data(), got.size());
    EXPECT_GT(diff, 1e-3f) << type << ": the head was not rounded";
    EXPECT_LT(diff, bound) << type;
  }
}

TEST(Cli, RunStreamsAnAnswerAndReportsSpeed) {
  const auto r = gemma("run -p 'Why is the sky blue?' -n 12 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("random weights"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("prompt eval rate:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eval count:           12 token(s)"), std::string::npos) << r.output;
}

// A first run: the demo model says it has random weights, and its generation_config.json's max_new_tokens
// ends the nonsense after 32 tokens; -n -1 lifts the cap (here until the context is full).
TEST(Cli, TheDemoModelStopsAfterAShortAnswer) {
  const auto r = gemma("run -p 'Why is the sky blue?' --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("random weights"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eval count:           32 token(s)"), std::string::npos) << r.output;
  const auto lifted = gemma("run --raw -p 'Once upon a time' --temp 0 -n -1 --ctx 64");
  ASSERT_EQ(lifted.exit_code, 0) << lifted.output;
  EXPECT_NE(lifted.output.find("context of 64 tokens is full"), std::string::npos) << lifted.output;
}

// max_length counts the prompt too, as in transformers; a value that is not a token count is named.
TEST(Cli, GenerationConfigMaxLengthCountsThePrompt) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  const auto config_path = dir.path() / "generation_config.json";
  auto config = test::read_json(config_path);
  config.erase("max_new_tokens");
  config["max_length"] = 20;
  std::ofstream(config_path) << config.dump();
  auto r = gemma("run -m " + quoted(dir.path()) + " --raw -p 'Once upon a time' --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("prompt eval count:    8 token(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eval count:           12 token(s)"), std::string::npos) << r.output;

  config["max_length"] = "long";
  std::ofstream(config_path) << config.dump();
  r = gemma("run -m " + quoted(dir.path()) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("generation_config.json: max_length: must be a non-negative integer"),
            std::string::npos)
      << r.output;
}

TEST(Cli, InteractiveChatKeepsTheCacheBetweenTurns) {
  test::ScratchDir dir;
  const auto input = dir.path() / "input.txt";
  std::ofstream(input) << "Hello there\nAnd a second question\n/bye\n";
  const auto r = gemma("run -n 6 --temp 0", input.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto first = r.output.find("(0 reused from the cache)");
  ASSERT_NE(first, std::string::npos) << r.output;
  // The second turn re-renders the conversation; everything up to the first answer is already cached.
  const auto second = r.output.find("reused from the cache)", first + 10);
  ASSERT_NE(second, std::string::npos) << r.output;
  const auto count_start = r.output.rfind('(', second) + 1;
  EXPECT_GT(std::stoi(r.output.substr(count_start)), 10) << r.output;
}

TEST(Cli, SameSeedSameText) {
  const std::string args = "run --raw -p 'The quick brown fox' -n 16 --temp 1 --seed 7";
  const auto a = gemma(args), b = gemma(args);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const auto text = [](const std::string& s) { return s.substr(0, s.find("load duration")); };
  EXPECT_EQ(text(a.output), text(b.output));
}

TEST(Cli, InspectShowsLayerTypesAndTensors) {
  const auto r = gemma("inspect " + quoted(test::demo_model_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layer  5: global"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.layers.7.mlp.down_proj.weight"), std::string::npos) << r.output;
}

TEST(Cli, InspectReadsAConvertedGguf) {
  test::ScratchDir dir;
  const auto gguf = dir.path() / "tiny.gguf";
  auto r = gemma("convert " + quoted(test::demo_model_dir()) + " -o " + quoted(gguf));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = gemma("inspect " + quoted(gguf));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GGUF v3, alignment 32"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gemma3.block_count                            = 8"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokenizer.ggml.tokens                         = [ARRAY of STRING, 1024 items: \"<pad>\""),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("token_embd.weight                        BF16  [1024, 64]"), std::string::npos)
      << r.output;

  auto bytes = test::read_bytes(gguf);
  bytes.resize(bytes.size() / 2);
  test::write_bytes(gguf, bytes);
  r = gemma("inspect " + quoted(gguf));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(gguf.string()), std::string::npos) << r.output;
}

// Gemma 3n chats like any other Gemma, from its folder and from the q8_0 GGUF `gemma convert` writes (the
// default fast path: 8-bit activation blocks on the repacked matrices).
TEST(Cli, RunsGemma3nFromItsFolderAndItsGguf) {
  test::ScratchDir dir;
  const auto folder = test::fixture_model_dir("gemma3n-tiny");
  const auto gguf = dir.path() / "3n-q8_0.gguf";
  auto r = gemma("convert " + quoted(folder) + " -o " + quoted(gguf) + " --outtype q8_0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const auto& model : {folder, gguf}) {
    r = gemma("run -m " + quoted(model) + " -p 'Why is the sky blue?' -n 8 --temp 0");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("eval count:           8 token(s)"), std::string::npos) << r.output;
  }
  r = gemma("inspect " + quoted(folder));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layer  9: global  mlp 128, sparsity 0, keys and values of layer 4"), std::string::npos)
      << r.output;
}

// Gemma 4 chats in its own turn format (--think opens its thinking mode) and ends its answers at <turn|>;
// inspect shows each layer's geometry.
TEST(Cli, RunsAndInspectsGemma4) {
  const auto folder = test::fixture_model_dir("gemma4-tiny");
  auto r = gemma("run -m " + quoted(folder) + " -p 'Why is the sky blue?' -n 8 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval count:"), std::string::npos) << r.output;
  r = gemma("run -m " + quoted(folder) + " --think -p 'Why?' -n 4 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = gemma("run --think -p 'Why?' -n 4");  // the demo model, a Gemma 3, has no thinking mode
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no thinking mode"), std::string::npos) << r.output;
  r = gemma("inspect " + quoted(folder));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layer  9: global  head_dim 64 x 2 kv heads, RoPE on 8 of 32 pairs, mlp 256, keys and "
                          "values of layer 4"),
            std::string::npos)
      << r.output;
}

// What a user does with a converted file: run it, tokenize with it, and get what the folder gives.
TEST(Cli, RunAndTokenizeAQ8_0GgufAsTheFolder) {
  test::ScratchDir dir;
  const auto gguf = dir.path() / "tiny-q8_0.gguf";
  auto r = gemma("convert " + quoted(test::demo_model_dir()) + " -o " + quoted(gguf) + " --outtype q8_0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string prompt = " --raw -p 'Once upon a time' -n 8 --temp 0 ";
  const auto from_file = gemma("run -m " + quoted(gguf) + prompt);
  ASSERT_EQ(from_file.exit_code, 0) << from_file.output;
  EXPECT_NE(from_file.output.find("eval count:           8 token(s)"), std::string::npos) << from_file.output;

  const auto tok_file = gemma("tokenize --ids -m " + quoted(gguf) + " 'Hello <start_of_turn> world'");
  const auto tok_dir = gemma("tokenize --ids -m " + quoted(test::demo_model_dir()) + " 'Hello <start_of_turn> world'");
  ASSERT_EQ(tok_file.exit_code, 0) << tok_file.output;
  EXPECT_EQ(tok_file.output, tok_dir.output);
}

TEST(CliErrors, MissingModelFolder) {
  const auto r = gemma("run -m /nonexistent/model -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent/model"), std::string::npos) << r.output;
}

TEST(CliErrors, TokenIdPastVocabularyLeavesNoOutput) {
  test::ScratchDir dir;
  const auto out = dir.path() / "logits.f32";
  const auto r = gemma("logits --ids 2,5000 -o " + quoted(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("token id 5000"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out.string() + ".tmp"));
}

TEST(CliErrors, PromptPastTheContext) {
  const auto r = gemma("run --raw -p 'The quick brown fox jumps over the lazy dog' --ctx 4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("exceeds the context of 4"), std::string::npos) << r.output;
}

TEST(CliErrors, EmptyPromptWhereOneIsNeeded) {
  auto r = gemma("logits -p '' -o /tmp/never-written.f32");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no tokens"), std::string::npos) << r.output;
  r = gemma("run -p ''");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("empty prompt"), std::string::npos) << r.output;
}

TEST(CliErrors, DroppedOrReshapedTensorIsNamed) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  const auto weights = dir.path() / "model.safetensors";
  const std::string name = "model.layers.3.self_attn.k_proj.weight";
  test::edit_safetensors_header(weights, [&](nlohmann::json& h) { h[name]["shape"] = {32, 128}; });
  auto r = gemma("run -m " + quoted(dir.path()) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'" + name + "' has shape [32, 128], expected [64, 64]"), std::string::npos) << r.output;

  test::edit_safetensors_header(weights, [&](nlohmann::json& h) { h.erase(name); });
  r = gemma("run -m " + quoted(dir.path()) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing tensor '" + name + "'"), std::string::npos) << r.output;
}

TEST(CliErrors, BadConfigFieldsAreNamed) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  auto config = test::read_json(dir.path() / "config.json");
  config["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  std::ofstream(dir.path() / "config.json") << config.dump();
  auto r = gemma("run -m " + quoted(dir.path()) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("config.json: rope_scaling"), std::string::npos) << r.output;

  config["rope_scaling"] = nullptr;
  config["model_type"] = "mistral";
  std::ofstream(dir.path() / "config.json") << config.dump();
  r = gemma("run -m " + quoted(dir.path()) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("model_type: 'mistral'"), std::string::npos) << r.output;

  std::filesystem::remove(dir.path() / "config.json");
  r = gemma("run -m " + quoted(dir.path()) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("config.json: cannot open"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ge
