// Tokenizer::from_vocabulary (the SentencePiece vocabulary a GGUF file carries) against the file
// loaders: built from each fixture's tokenizer.model it must encode and decode exactly as the
// tokenizer.model path does; built as the converter builds it from the real Gemma 3 tokenizer.json
// (score = -rank of the first merge forming the piece) it must give Hugging Face's ids.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "test_util.h"
#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_model.h"
#include "tokenizer_cases.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
namespace td = tokenizer_detail;
using test::ScratchDir;

// SentencePiece token types, as VocabularyData::types holds them.
constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;
const std::string kSpace = "\xE2\x96\x81";  // "▁"

// The shared cases plus text aimed at the places where the two paths could part: runs of spaces
// (user-defined "▁▁" pieces), literal "▁", control tokens (whole, back to back, cut short), characters
// without a piece (byte fallback), bytes that are not UTF-8.
std::vector<std::string> probe_texts() {
  std::vector<std::string> texts;
  for (const test::TokenizerCase& c : test::shared_cases()) texts.push_back(c.text);
  for (const char* text :
       {"", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\n", "one\ntwo\n\n\nthree\n",
        "\t\tindented\t", "\xE2\x96\x81literal\xE2\x96\x81\xE2\x96\x81marks \xE2\x96\x81 ",
        "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n", "<bos><eos><pad><unk><mask>",
        "<start_of_turn", "x<end_of_turn>y", "<unused2><unused3>",
        "emoji \xF0\x9F\xA6\x99\xF0\x9F\x9A\x80 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!",
        "rare \xF0\xA0\x9C\x8E and \xE4\xB8\xAD\xE6\x96\x87 \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
        "not utf-8: \xFF\xFE \xC3 end", "caf\xC3\xA9 na\xC3\xAFve \xC3\xB1"})
    texts.emplace_back(text);
  return texts;
}

// What GGUF writers do to a non-special added token's text.
std::string with_spaces(std::string text) {
  for (size_t pos = 0; (pos = text.find(kSpace, pos)) != std::string::npos; ++pos)
    text.replace(pos, kSpace.size(), " ");
  return text;
}

void use_special_ids(const Tokenizer& from, VocabularyData& v) {
  v.bos_id = from.bos_id();
  v.eos_id = from.eos_id();
  v.unk_id = from.unk_id();
  v.pad_id = from.pad_id();
  v.add_bos = from.add_bos_default();
}

// tokenizer.model's pieces as the converter writes them, special ids from the loaded tokenizer.
VocabularyData vocabulary_of_model(const fs::path& model_file, const Tokenizer& loaded) {
  VocabularyData v;
  for (const auto& p : td::read_sentencepiece_pieces(model_file)) {
    v.tokens.push_back(p.text);
    v.scores.push_back(p.score);
    v.types.push_back(p.type);
  }
  use_special_ids(loaded, v);
  return v;
}

// The converter fills the ids of the model's embedding that no file names with unused pieces.
void pad_to(VocabularyData& v, size_t count) {
  while (v.tokens.size() < count) {
    v.tokens.push_back("[PAD" + std::to_string(v.tokens.size()) + "]");
    v.scores.push_back(-10000.0f);
    v.types.push_back(kUnused);
  }
}

// Sets `id` to an added token as the converter does: special ones control, the others user-defined with
// "▁" written as " ".
void set_added_token(VocabularyData& v, int32_t id, const std::string& content, bool special) {
  pad_to(v, id + 1);
  v.tokens[id] = special ? content : with_spaces(content);
  v.scores[id] = -1000.0f;
  v.types[id] = special ? kControl : kUserDefined;
}

void expect_same_encoding(const Tokenizer& expected, const Tokenizer& actual) {
  EXPECT_EQ(actual.bos_id(), expected.bos_id());
  EXPECT_EQ(actual.eos_id(), expected.eos_id());
  EXPECT_EQ(actual.pad_id(), expected.pad_id());
  EXPECT_EQ(actual.unk_id(), expected.unk_id());
  EXPECT_EQ(actual.add_bos_default(), expected.add_bos_default());
  for (const std::string& text : probe_texts()) {
    SCOPED_TRACE(text);
    const auto ids = expected.encode(text, false);
    EXPECT_EQ(actual.encode(text, false), ids);
    EXPECT_EQ(actual.encode(text, true), expected.encode(text, true));
    EXPECT_EQ(actual.decode(ids), expected.decode(ids));
  }
}

// ---- tiny fixtures: the vocabulary of tokenizer.model ----

// The "Tokenizer" prefix of the instantiations keeps these under --gtest_filter='Tokenizer*'.
std::string fixture_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class TokenizerVocabularyFixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path model_dir() const { return test::fixture_model_dir(GetParam()); }

  // Tokenizer::load on a folder with only `files` of the fixture, so that it reads tokenizer.model.
  Tokenizer load_only(const ScratchDir& dir, std::initializer_list<const char*> files) const {
    for (const char* name : files) fs::copy_file(model_dir() / name, dir.path() / name);
    return Tokenizer::load(dir.path());
  }
};

TEST_P(TokenizerVocabularyFixture, EncodesAsTokenizerModel) {
  const ScratchDir dir;
  const Tokenizer model = load_only(dir, {"tokenizer.model"});
  const Tokenizer vocab = Tokenizer::from_vocabulary(
      vocabulary_of_model(model_dir() / "tokenizer.model", model), "test vocabulary");
  ASSERT_EQ(vocab.size(), model.size());
  for (int32_t id = 0; id < model.size(); ++id) {
    EXPECT_EQ(vocab.piece(id), model.piece(id)) << id;
    EXPECT_EQ(vocab.is_special(id), model.is_special(id)) << id;
  }
  expect_same_encoding(model, vocab);
}

// GGUF writers give user-defined pieces spaces for "▁" (llama.cpp matches them in the raw text).
TEST_P(TokenizerVocabularyFixture, UserDefinedPiecesWrittenWithSpacesEncodeTheSame) {
  const ScratchDir dir;
  const Tokenizer model = load_only(dir, {"tokenizer.model"});
  VocabularyData v = vocabulary_of_model(model_dir() / "tokenizer.model", model);
  for (size_t id = 0; id < v.tokens.size(); ++id)
    if (v.types[id] == kUserDefined) v.tokens[id] = with_spaces(v.tokens[id]);
  const Tokenizer vocab = Tokenizer::from_vocabulary(v, "test vocabulary");
  for (int32_t id = 0; id < model.size(); ++id) EXPECT_EQ(vocab.piece(id), model.piece(id)) << id;
  expect_same_encoding(model, vocab);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerVocabularyFixture,
                         ::testing::Values("gemma3-tiny", "gemma3-tiny-rope", "gemma3-tiny-vision",
                                           "gemma-tiny", "gemma2-tiny", "sentencepiece-variant"),
                         fixture_test_name);

// With tokenizer_config.json: its added tokens (some past the model's pieces) and special token names,
// folded into the vocabulary as the converter folds them.
class TokenizerVocabularyWithConfig : public TokenizerVocabularyFixture {};

TEST_P(TokenizerVocabularyWithConfig, EncodesAsTokenizerModelWithConfig) {
  const ScratchDir dir;
  const Tokenizer model = load_only(dir, {"tokenizer.model", "tokenizer_config.json"});
  VocabularyData v = vocabulary_of_model(model_dir() / "tokenizer.model", model);
  const auto config = test::read_json(model_dir() / "tokenizer_config.json");
  for (const auto& [key, token] : config["added_tokens_decoder"].items())
    set_added_token(v, std::stoi(key), token["content"], token.value("special", false));
  const Tokenizer vocab = Tokenizer::from_vocabulary(v, "test vocabulary");
  ASSERT_EQ(vocab.size(), model.size());
  expect_same_encoding(model, vocab);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerVocabularyWithConfig,
                         ::testing::Values("gemma3-tiny", "gemma3-tiny-rope", "gemma3-tiny-vision",
                                           "gemma-tiny", "gemma2-tiny"),
                         fixture_test_name);

// ---- the real Gemma 3 tokenizer, converted from tokenizer.json ----

// The merge's two parts joined: the piece it forms.
std::string formed_piece(const td::JsonFile& file, td::JsonFile::Element merge) {
  if (merge.is_string()) {
    std::string s(file.as_string(merge, "model.merges"));
    s.erase(s.find(' '), 1);
    return s;
  }
  std::string formed;
  for (const auto part : file.as_array(merge, "model.merges")) formed += file.as_string(part, "model.merges");
  return formed;
}

// The "llama" vocabulary the converter writes for a checkpoint with only tokenizer.json: vocabulary
// pieces normal (byte pieces byte) with score -(rank of the first merge forming them), 0 when none does;
// added tokens as set_added_token makes them (control vs. user-defined changes is_special, not ids).
VocabularyData vocabulary_of_tokenizer_json(const fs::path& path) {
  const td::JsonFile file(path);
  const auto model = file.as_object(file.member(file.root(), "model", "model"), "model");
  std::unordered_map<std::string, int64_t> first_rank;
  int64_t rank = 0;
  for (const auto merge : file.as_array(file.member(model, "merges", "model.merges"), "model.merges"))
    first_rank.try_emplace(formed_piece(file, merge), rank++);
  VocabularyData v;
  for (const auto [piece, id_element] :
       file.as_object(file.member(model, "vocab", "model.vocab"), "model.vocab")) {
    const auto id = static_cast<size_t>(file.as_int(id_element, "model.vocab"));
    if (v.tokens.size() <= id) {
      v.tokens.resize(id + 1);
      v.scores.resize(id + 1);
      v.types.resize(id + 1);
    }
    v.tokens[id] = std::string(piece);
    const auto it = first_rank.find(v.tokens[id]);
    v.scores[id] = it == first_rank.end() ? 0.0f : -static_cast<float>(it->second);
    const bool byte = piece.size() == 6 && piece.starts_with("<0x") && piece.ends_with(">");
    v.types[id] = byte ? kByte : kNormal;
  }
  for (const auto token :
       file.as_array(file.member(file.root(), "added_tokens", "added_tokens"), "added_tokens")) {
    const auto o = file.as_object(token, "added_tokens");
    const auto id =
        static_cast<int32_t>(file.as_int(file.member(o, "id", "added_tokens.id"), "added_tokens.id"));
    const float score = id < static_cast<int32_t>(v.scores.size()) ? v.scores[id] : 0.0f;
    set_added_token(v, id, std::string(file.string_member(o, "content", "added_tokens.content")),
                    file.bool_or(o, "special", "added_tokens.special", false));
    v.scores[id] = score;
  }
  return v;
}

const Tokenizer& real_vocabulary_tokenizer() {
  static const Tokenizer tok = [] {
    VocabularyData v = vocabulary_of_tokenizer_json(test::real_tokenizer_dir() / "tokenizer.json");
    pad_to(v, 262208);  // the rows of Gemma 3's embedding
    use_special_ids(test::real_tokenizer(), v);
    return Tokenizer::from_vocabulary(v, "gemma3 vocabulary");
  }();
  return tok;
}

TEST(TokenizerVocabularyGemma3, EncodesEverySharedCaseLikeHuggingFace) {
  const Tokenizer& tok = real_vocabulary_tokenizer();
  test::expect_shared_case_ids(tok);
  for (const test::TokenizerCase& c : test::shared_cases()) EXPECT_EQ(tok.decode(c.ids), c.text) << c.kind;
}

// Score order (this path, llama.cpp's) and merge-rank order (Hugging Face) agree on Gemma 3 because its
// tokenizer.json lists every split of every piece as a merge, the splits of one piece together: ranking
// a pair by the first merge forming its piece then loses nothing. Whitespace runs take different routes
// (user-defined "▁▁..." pieces matched before BPE here, merges of "▁" runs there) to the same ids.
TEST(TokenizerVocabularyGemma3, AgreesWithTokenizerJsonOnProbeText) {
  const Tokenizer& tok = real_vocabulary_tokenizer();
  const Tokenizer& json = test::real_tokenizer();
  std::vector<std::string> texts = probe_texts();
  for (const int n : {2, 3, 30, 31, 32, 40, 62, 63, 100}) {
    texts.push_back("a" + std::string(n, ' ') + "b");
    texts.push_back(std::string(n, ' ') + "Hello" + std::string(n, '\t') + std::string(n, '\n'));
  }
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    EXPECT_EQ(tok.encode(text, true), json.encode(text, true));
  }
}

// ---- bad input ----

VocabularyData small_vocabulary() {
  VocabularyData v;
  v.tokens = {"<unk>", "<bos>", "<eos>", "<pad>", "a", "b", "ab"};
  v.scores = {0, 0, 0, 0, -1, -2, -0.5f};
  v.types = {2, kControl, kControl, kControl, kNormal, kNormal, kNormal};
  return v;
}

TEST(TokenizerVocabularyErrors, SmallVocabularyWorks) {
  const Tokenizer tok = Tokenizer::from_vocabulary(small_vocabulary(), "small.gguf");
  EXPECT_EQ(tok.bos_id(), 1);  // absent ids fall back to the pieces' names
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.encode("abba", true), (std::vector<int32_t>{1, 6, 5, 4}));
  EXPECT_EQ(tok.encode("c", false), (std::vector<int32_t>{0}));  // no byte pieces: <unk>
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(6));
}

TEST(TokenizerVocabularyErrors, MismatchedArraySizesAreNamed) {
  VocabularyData v = small_vocabulary();
  v.scores.pop_back();
  const std::string message = test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); });
  EXPECT_NE(message.find("bad.gguf: scores: 6 values for 7 tokens"), std::string::npos) << message;
  v = small_vocabulary();
  v.types.push_back(kNormal);
  EXPECT_NE(
      test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); }).find("bad.gguf: types: 8 values"),
      std::string::npos);
}

TEST(TokenizerVocabularyErrors, UnknownTokenTypeIsNamed) {
  VocabularyData v = small_vocabulary();
  v.types[4] = 9;
  const std::string message = test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); });
  EXPECT_NE(message.find("bad.gguf: types[4]: unknown token type 9"), std::string::npos) << message;
  v.types[4] = 0;  // llama.cpp's "undefined"
  EXPECT_NE(test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); }).find("bad.gguf: types[4]"),
            std::string::npos);
}

TEST(TokenizerVocabularyErrors, OutOfRangeIdsAndEmptyPiecesAreNamed) {
  VocabularyData v = small_vocabulary();
  v.eos_id = 7;
  std::string message = test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); });
  EXPECT_NE(message.find("bad.gguf: eos_id: 7 is not a token id"), std::string::npos) << message;
  v = small_vocabulary();
  v.tokens[4].clear();
  message = test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); });
  EXPECT_NE(message.find("bad.gguf: tokens[4]: empty"), std::string::npos) << message;
  v = small_vocabulary();
  v.tokens = {"a", "b"};
  v.scores = {0, 0};
  v.types = {kNormal, kNormal};
  message = test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); });
  EXPECT_NE(message.find("bad.gguf: no '<bos>' token"), std::string::npos) << message;
}

TEST(TokenizerVocabularyErrors, NanScoreIsNamed) {
  VocabularyData v = small_vocabulary();
  v.scores[6] = std::numeric_limits<float>::quiet_NaN();
  const std::string message = test::error_of([&] { Tokenizer::from_vocabulary(v, "bad.gguf"); });
  EXPECT_NE(message.find("bad.gguf: scores[6]: not a number"), std::string::npos) << message;
}

}  // namespace
}  // namespace ge
