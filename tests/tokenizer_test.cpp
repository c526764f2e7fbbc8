// Tokenizer against Hugging Face's output: the 42 shared cases encoded by the real Gemma 3 tokenizer,
// and the reference token ids of the tiny fixtures through both tokenizer.json and tokenizer.model.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "tokenizer/utf8.h"
#include "tokenizer_cases.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using test::ScratchDir;

void write_text(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder decoder(tok);
  std::string out;
  for (const int32_t id : ids) out += decoder.push(id);
  return out + decoder.flush();
}

// Copies `files` from the folder `from` into `dir`.
void copy_into(const ScratchDir& dir, const fs::path& from, std::initializer_list<const char*> files) {
  for (const char* name : files) fs::copy_file(from / name, dir.path() / name);
}

// ---- real Gemma 3 tokenizer (262,144 pieces) ----

TEST(TokenizerGemma3, EncodesEverySharedCaseLikeHuggingFace) {
  test::expect_shared_case_ids(test::real_tokenizer());
}

TEST(TokenizerGemma3, DecodeGivesBackEveryCaseText) {
  const Tokenizer& tok = test::real_tokenizer();
  for (const test::TokenizerCase& c : test::shared_cases()) {
    SCOPED_TRACE(c.kind + ": " + c.text);
    EXPECT_EQ(tok.decode(c.ids), c.text);
    EXPECT_EQ(tok.decode(c.ids_with_bos), "<bos>" + c.text);
  }
}

TEST(TokenizerGemma3, VocabularyAndSpecialTokens) {
  const Tokenizer& tok = test::real_tokenizer();
  EXPECT_EQ(tok.size(), 262145);
  EXPECT_EQ(tok.bos_id(), 2);
  EXPECT_EQ(tok.eos_id(), 106);  // tokenizer_config.json names <end_of_turn> as eos_token
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 3);
  EXPECT_TRUE(tok.add_bos_default());
  EXPECT_EQ(tok.piece(2), "<bos>");
  EXPECT_EQ(tok.piece(236743), "\xE2\x96\x81");
  EXPECT_EQ(tok.piece(478), "<0xF0>");
  EXPECT_EQ(tok.piece(262144), "<image_soft_token>");
  EXPECT_EQ(tok.find("<start_of_turn>"), 105);
  EXPECT_EQ(tok.find("\xE2\x96\x81world"), 1902);
  EXPECT_EQ(tok.find("no such piece"), std::nullopt);
  EXPECT_TRUE(tok.is_special(2));
  EXPECT_TRUE(tok.is_special(105));
  EXPECT_TRUE(tok.is_special(262144));
  EXPECT_FALSE(tok.is_special(4));  // <mask> is an added token but not a special one
  EXPECT_FALSE(tok.is_special(1902));
  EXPECT_FALSE(tok.is_special(262145));
  EXPECT_THROW(tok.piece(262145), std::out_of_range);
  EXPECT_THROW(tok.piece(-1), std::out_of_range);
}

TEST(TokenizerGemma3, LongTextRoundTrips) {
  const Tokenizer& tok = test::real_tokenizer();
  std::string text;
  while (text.size() < (1 << 20))
    for (const test::TokenizerCase& c : test::shared_cases()) text += c.text + " ";
  EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
}

TEST(TokenizerGemma3, DecodeSkipsIdsPastTheTokenizer) {
  // Gemma 3's embedding has 262208 rows; the extra ids name no token, and HF's decode drops them.
  const std::vector<int32_t> ids = {9259, 262200, 1902, -5};
  EXPECT_EQ(test::real_tokenizer().decode(ids), "Hello world");
  EXPECT_EQ(stream_decode(test::real_tokenizer(), ids), "Hello world");
}

TEST(TokenizerGemma3, StreamDecoderWaitsForWholeCharacters) {
  const Tokenizer& tok = test::real_tokenizer();
  // "I love 🦙 and 🚀!": the llama is four byte pieces <0xF0><0x9F><0xA6><0x99>.
  const std::vector<int32_t> ids = {236777, 2765, 236743, 478, 397, 404, 391, 532, 236743, 242015, 236888};
  StreamDecoder decoder(tok);
  std::vector<std::string> pushed;
  for (const int32_t id : ids) pushed.push_back(decoder.push(id));
  EXPECT_EQ(pushed[2], " ");
  EXPECT_EQ(pushed[3], "");
  EXPECT_EQ(pushed[4], "");
  EXPECT_EQ(pushed[5], "");
  EXPECT_EQ(pushed[6], "\xF0\x9F\xA6\x99");
  EXPECT_EQ(decoder.flush(), "");
  std::string joined;
  for (const auto& s : pushed) joined += s;
  EXPECT_EQ(joined, tok.decode(ids));
  EXPECT_EQ(joined, "I love \xF0\x9F\xA6\x99 and \xF0\x9F\x9A\x80!");
}

TEST(TokenizerGemma3, StreamDecoderMatchesDecodeOnEveryCase) {
  const Tokenizer& tok = test::real_tokenizer();
  for (const test::TokenizerCase& c : test::shared_cases()) {
    SCOPED_TRACE(c.kind + ": " + c.text);
    StreamDecoder decoder(tok);
    std::string joined;
    for (const int32_t id : c.ids_with_bos) {
      const std::string text = decoder.push(id);
      EXPECT_TRUE(tokenizer_detail::is_valid_utf8(text)) << "half a character after id " << id;
      joined += text;
    }
    EXPECT_EQ(decoder.flush(), "");
    EXPECT_EQ(joined, tok.decode(c.ids_with_bos));
  }
}

TEST(TokenizerGemma3, StreamDecoderHoldsRareCjkUntilComplete) {
  const Tokenizer& tok = test::real_tokenizer();
  // "𠜎" (U+2070E) is not a piece: <0xF0><0xA0><0x9C><0x8E>.
  StreamDecoder decoder(tok);
  EXPECT_EQ(decoder.push(236743), " ");
  EXPECT_EQ(decoder.push(478), "");
  EXPECT_EQ(decoder.push(398), "");
  EXPECT_EQ(decoder.push(394), "");
  EXPECT_EQ(decoder.push(380), "\xF0\xA0\x9C\x8E");
}

TEST(TokenizerGemma3, BrokenByteSequencesBecomeReplacementCharacters) {
  const Tokenizer& tok = test::real_tokenizer();
  const std::string fffd = "\xEF\xBF\xBD";
  // <0xF0><0x9F> cut short by "▁and": no character can complete.
  const std::vector<int32_t> cut = {478, 397, 532};
  EXPECT_EQ(tok.decode(cut), fffd + fffd + " and");
  EXPECT_EQ(stream_decode(tok, cut), fffd + fffd + " and");
  StreamDecoder decoder(tok);
  EXPECT_EQ(decoder.push(478), "");
  EXPECT_EQ(decoder.flush(), fffd);
  EXPECT_EQ(decoder.push(391), fffd);  // a continuation byte cannot start a character
  decoder.push(478);
  decoder.reset();
  EXPECT_EQ(decoder.push(1902), " world");
}

TEST(TokenizerMove, StreamDecoderSurvivesMovingTheTokenizer) {
  Tokenizer tok = Tokenizer::load(test::demo_model_dir());
  StreamDecoder decoder(tok);
  const Tokenizer moved = std::move(tok);
  EXPECT_EQ(decoder.push(*moved.find("<start_of_turn>")), "<start_of_turn>");
}

// ---- tiny fixtures: tokenizer.json and tokenizer.model ----

class TokenizerFixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path model_dir() const { return test::fixture_model_dir(GetParam()); }
  nlohmann::json reference() const {
    return test::read_json(test::fixture_reference_dir(GetParam()) / "reference.json");
  }

  // A folder with only tokenizer.model and tokenizer_config.json, so that load() takes the SentencePiece
  // path.
  Tokenizer load_sentencepiece(const ScratchDir& dir) const {
    copy_into(dir, model_dir(), {"tokenizer.model", "tokenizer_config.json"});
    return Tokenizer::load(dir.path());
  }
};

TEST_P(TokenizerFixture, TokenizerJsonReproducesReferenceIds) {
  const auto ref = reference();
  const Tokenizer tok = Tokenizer::load(model_dir());
  const std::vector<int32_t> expected = ref["token_ids"];
  EXPECT_EQ(tok.encode(ref["text"].get<std::string>(), true), expected);
  EXPECT_EQ(tok.decode(expected), "<bos>" + ref["text"].get<std::string>());
}

TEST_P(TokenizerFixture, TokenizerModelReproducesReferenceIds) {
  const auto ref = reference();
  const ScratchDir dir;
  const Tokenizer tok = load_sentencepiece(dir);
  const std::vector<int32_t> expected = ref["token_ids"];
  EXPECT_EQ(tok.encode(ref["text"].get<std::string>(), true), expected);
}

// The fixture's two files are documented to give identical ids; check that on varied text too.
TEST_P(TokenizerFixture, BothFileKindsAgree) {
  const ScratchDir dir;
  const Tokenizer json = Tokenizer::load(model_dir());
  const Tokenizer model = load_sentencepiece(dir);
  ASSERT_EQ(model.size(), json.size());
  EXPECT_EQ(model.bos_id(), json.bos_id());
  EXPECT_EQ(model.eos_id(), json.eos_id());
  EXPECT_EQ(model.pad_id(), json.pad_id());
  EXPECT_EQ(model.unk_id(), json.unk_id());
  for (int32_t id = 0; id < json.size(); ++id) {
    EXPECT_EQ(model.piece(id), json.piece(id)) << id;
    EXPECT_EQ(model.is_special(id), json.is_special(id)) << id;
  }
  for (const test::TokenizerCase& c : test::shared_cases()) {
    SCOPED_TRACE(c.kind + ": " + c.text);
    const auto ids = json.encode(c.text, true);
    EXPECT_EQ(model.encode(c.text, true), ids);
    EXPECT_EQ(json.decode(ids), "<bos>" + c.text);
  }
}

// The "Tokenizer" prefix keeps these under --gtest_filter='Tokenizer*'.
INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerFixture,
                         // gemma-tiny / gemma2-tiny: Gemma 1/2 tokenizer_config.json with its 1e30 model_max_length
                         ::testing::Values("gemma3-tiny", "gemma3-tiny-rope", "gemma3-tiny-vision", "gemma-tiny",
                                           "gemma2-tiny"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TokenizerFixtureLayout, SpecialTokensOfTheTinyTokenizer) {
  const Tokenizer tok = Tokenizer::load(test::demo_model_dir());
  EXPECT_EQ(tok.size(), 1025);
  EXPECT_EQ(tok.bos_id(), 2);
  EXPECT_EQ(tok.eos_id(), 9);  // <end_of_turn>, from tokenizer_config.json
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 3);
  EXPECT_EQ(tok.piece(13), "<0x00>");
  EXPECT_EQ(tok.encode("<start_of_image><image_soft_token><end_of_image>", false),
            (std::vector<int32_t>{1020, 1024, 1021}));
}

TEST(TokenizerJsonFormat, MergesWrittenAsStringsGiveTheSameIds) {
  const ScratchDir dir;
  copy_into(dir, test::demo_model_dir(), {"tokenizer.json", "tokenizer_config.json"});
  auto json = test::read_json(dir.path() / "tokenizer.json");
  for (auto& merge : json["model"]["merges"])
    merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  write_text(dir.path() / "tokenizer.json", json.dump());
  const Tokenizer strings = Tokenizer::load(dir.path());
  const Tokenizer pairs = Tokenizer::load(test::demo_model_dir());
  for (const test::TokenizerCase& c : test::shared_cases())
    EXPECT_EQ(strings.encode(c.text, true), pairs.encode(c.text, true)) << c.text;
}

// A variant of the fixture's tokenizer.model with unused pieces (SentencePiece may form them while
// merging but splits each back into the pair that formed it) and "▁▁" as a user-defined piece
// (matched in the normalized text, so it matches two spaces). Expected ids come from SentencePiece
// itself (see expected.json's "source").
TEST(TokenizerSentencePiece, VariantModelMatchesSentencePiece) {
  const fs::path dir = test::data_dir() / "sentencepiece-variant";
  const Tokenizer tok = Tokenizer::load(dir);
  const Tokenizer unmodified = Tokenizer::load(test::demo_model_dir());
  const auto expected = test::read_json(dir / "expected.json");
  ASSERT_FALSE(expected["cases"].empty());
  int changed = 0;
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> ids = c["ids"];
    EXPECT_EQ(tok.encode(text, false), ids) << text;
    EXPECT_EQ(tok.decode(ids), text);
    changed += unmodified.encode(text, false) != ids;
  }
  EXPECT_GT(changed, 0) << "the variant should change some encodings";
}

// ---- errors ----

TEST(TokenizerErrors, MissingFolderNamesTheFile) {
  const std::string message = test::error_of([] { Tokenizer::load("/nonexistent/gemma"); });
  EXPECT_NE(message.find("/nonexistent/gemma/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("tokenizer.model"), std::string::npos) << message;
}

TEST(TokenizerErrors, CorruptTokenizerJsonNamesTheFile) {
  const ScratchDir dir;
  write_text(dir.path() / "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0,");
  const std::string message = test::error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(message.find((dir.path() / "tokenizer.json").string() + ": invalid JSON"), std::string::npos)
      << message;
}

TEST(TokenizerErrors, MissingFieldsAreNamed) {
  const ScratchDir dir;
  const fs::path file = dir.path() / "tokenizer.json";
  write_text(file, R"({"added_tokens": []})");
  EXPECT_NE(test::error_of([&] { Tokenizer::load(dir.path()); }).find("tokenizer.json: model: missing"),
            std::string::npos);
  write_text(file, R"({"model": {"type": "BPE", "merges": []}})");
  EXPECT_NE(test::error_of([&] { Tokenizer::load(dir.path()); }).find("tokenizer.json: model.vocab: missing"),
            std::string::npos);
  write_text(file, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "c"]]},
                       "decoder": {"type": "Sequence", "decoders": [
                         {"type": "Replace", "pattern": {"String": "x"}, "content": " "},
                         {"type": "ByteFallback"}, {"type": "Fuse"}]}})");
  const std::string message = test::error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(message.find("tokenizer.json: model.merges[0]: 'c' is not in model.vocab"), std::string::npos)
      << message;
}

TEST(TokenizerErrors, UnsupportedComponentsAreRejected) {
  const ScratchDir dir;
  copy_into(dir, test::demo_model_dir(), {"tokenizer.json"});
  auto json = test::read_json(dir.path() / "tokenizer.json");
  json["normalizer"] = {{"type", "NFKC"}};
  write_text(dir.path() / "tokenizer.json", json.dump());
  const std::string message = test::error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(message.find("tokenizer.json: normalizer.type: 'NFKC' is not supported"), std::string::npos)
      << message;
}

TEST(TokenizerErrors, CorruptTokenizerConfigNamesTheFile) {
  const ScratchDir dir;
  copy_into(dir, test::demo_model_dir(), {"tokenizer.json"});
  write_text(dir.path() / "tokenizer_config.json", "{\"add_bos_token\": tru");
  const std::string message = test::error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(message.find("tokenizer_config.json: invalid JSON"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnknownSpecialTokenInConfigIsNamed) {
  const ScratchDir dir;
  copy_into(dir, test::demo_model_dir(), {"tokenizer.json"});
  write_text(dir.path() / "tokenizer_config.json", R"({"bos_token": "<nope>"})");
  const std::string message = test::error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(message.find("tokenizer_config.json: bos_token: '<nope>' is not a token"), std::string::npos)
      << message;
}

TEST(TokenizerErrors, TruncatedTokenizerModelNamesTheFile) {
  const ScratchDir dir;
  auto bytes = test::read_bytes(test::demo_model_dir() / "tokenizer.model");
  bytes.resize(bytes.size() / 2);
  test::write_bytes(dir.path() / "tokenizer.model", bytes);
  const std::string message = test::error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(message.find((dir.path() / "tokenizer.model").string() + ": "), std::string::npos) << message;
  EXPECT_NE(message.find("truncated protobuf"), std::string::npos) << message;
}

// ---- benchmark (not run by default: timings are reported, not asserted) ----

TEST(TokenizerBenchmark, DISABLED_LoadAndEncodeThroughput) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const Tokenizer tok = Tokenizer::load(test::real_tokenizer_dir());
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string text;
  while (text.size() < (1 << 20))
    for (const test::TokenizerCase& c : test::shared_cases()) text += c.text + "\n";
  const auto t1 = Clock::now();
  const auto ids = tok.encode(text, true);
  const double encode_s = std::chrono::duration<double>(Clock::now() - t1).count();
  const auto t2 = Clock::now();
  const std::string decoded = tok.decode(ids);
  const double decode_s = std::chrono::duration<double>(Clock::now() - t2).count();
  std::printf("load %.3f s; encode %.2f MB in %.3f s = %.1f MB/s (%zu tokens); decode %.1f MB/s\n", load_s,
              text.size() / 1e6, encode_s, text.size() / 1e6 / encode_s, ids.size(),
              decoded.size() / 1e6 / decode_s);
}

}  // namespace
}  // namespace ge
