// Gemma's tokenizer, giving the same ids as Hugging Face `tokenizers` on the published tokenizer.json:
// added/special tokens written in the text are matched first (leftmost, longest), spaces become "▁",
// and each remaining stretch is BPE-encoded with byte fallback. Without a tokenizer.json the
// SentencePiece tokenizer.model is read instead, encoding as transformers' slow GemmaTokenizer does.
// A GGUF file carries the same SentencePiece vocabulary as plain lists (VocabularyData).
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ge {

namespace tokenizer_detail {
struct TokenizerModel;
}

// A SentencePiece BPE vocabulary as GGUF stores it (tokenizer.ggml.model = "llama"), by id. Token types
// are SentencePiece's: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. Scores rank the
// merges: the pair forming the higher-scoring piece merges first.
struct VocabularyData {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;  // -1: absent
  bool add_bos = true;
  // Empty for SentencePiece. Otherwise the vocabulary is a Hugging Face BPE model's (GGUF "gemma4", from
  // Gemma 4's tokenizer.json): these merges ("left right", first merges first) rank the pairs, spaces are
  // "▁", and control and user-defined tokens are the added tokens, matched in the raw text.
  std::vector<std::string> merges;
};

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json (preferred) or else DIR/tokenizer.model, plus DIR/tokenizer_config.json when
  // present. Throws std::runtime_error naming the file and the field on bad or unsupported input.
  static Tokenizer load(const std::filesystem::path& dir);
  // Encodes and decodes as load() does with the tokenizer.model (or, with merges, the tokenizer.json) the
  // vocabulary came from; is_special is
  // true for control and unknown pieces. An absent bos/eos/pad id falls back to the piece of that name
  // ("<bos>", ...), an absent unk id to the piece typed unknown. User-defined pieces written with spaces
  // (GGUF writers turn their "▁" into " ") get their "▁" back. Throws std::runtime_error naming `origin`
  // and the field (tokens, scores, types, bos_id, ...) on inconsistent input.
  static Tokenizer from_vocabulary(const VocabularyData& vocabulary, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Special and added tokens written in the text are matched as tokens, as HF does. With add_bos the
  // result is HF's default encoding (<bos> prepended by the post-processor).
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // HF's decode with skip_special_tokens=False: "▁" -> " ", runs of <0xNN> pieces reassembled into
  // UTF-8 (a run that is not valid UTF-8 becomes one U+FFFD per byte), special tokens printed as
  // written. Ids that name no token (e.g. model rows past the tokenizer) are skipped, as HF does.
  std::string decode(std::span<const int32_t> ids) const;

  // Raw piece text ("▁the", "<0x0A>", "<bos>"); throws std::out_of_range for ids outside [0, size()).
  std::string_view piece(int32_t id) const;
  std::optional<int32_t> find(std::string_view piece) const;
  // Number of ids: the vocabulary plus added tokens past it (262145 for Gemma 3).
  int32_t size() const;

  // From tokenizer_config.json when it names them (Gemma 3 instruction-tuned checkpoints name
  // <end_of_turn> as eos_token), else <bos>/<eos>/<pad>/<unk> (tokenizer.model: its trainer ids).
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  // Control tokens (<bos>, <start_of_turn>, ...): tokenizer.json's special flag; for tokenizer.model,
  // control/unknown pieces unless tokenizer_config.json's added_tokens_decoder says otherwise.
  bool is_special(int32_t id) const;
  bool add_bos_default() const;  // tokenizer_config.json add_bos_token (default true)

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::unique_ptr<const tokenizer_detail::TokenizerModel> model);

  // Behind a pointer so that a StreamDecoder stays valid when the Tokenizer object is moved.
  std::unique_ptr<const tokenizer_detail::TokenizerModel> model_;
};

// Streaming decode for printing tokens as they are generated. Emits each character as soon as it is
// complete and never half of one: <0xNN> byte pieces are held until they form a whole UTF-8 character.
// For valid UTF-8 the concatenated output equals Tokenizer::decode; for byte runs that are not valid
// UTF-8 it emits U+FFFD for each byte that cannot be part of a character, where decode replaces every
// byte of the run (it can wait for the run to end; a stream cannot).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok);
  std::string push(int32_t id);  // the text completed by this token
  std::string flush();           // pending bytes, each as U+FFFD (they never completed a character)
  void reset();

 private:
  void drain_complete(std::string& out);
  void drain_invalid(std::string& out);

  const tokenizer_detail::TokenizerModel* model_;
  std::array<unsigned char, 4> pending_{};
  int pending_size_ = 0;
};

}  // namespace ge
