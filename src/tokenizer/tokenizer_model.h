// Everything a loaded tokenizer consists of, whichever file it came from, and the steps the two loaders
// (tokenizer.json, tokenizer.model) share. Internal to src/tokenizer.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/piece_table.h"
#include "tokenizer/text_util.h"

namespace ge {
struct VocabularyData;
}

namespace ge::tokenizer_detail {

struct TokenInfo {
  int16_t byte = -1;  // the byte a <0xNN> piece stands for (HF's ByteFallback decoder), -1 for others
  bool special = false;
  bool present = false;  // false for ids no token was assigned to
};

struct TokenizerModel {
  TextTable pieces;        // every id: the BPE vocabulary, then added tokens past it
  PieceIndex vocab_index;  // the BPE vocabulary only (ids [0, TokenList::vocab_size))
  AddedTokens added;       // matched in the raw text before anything else
  // tokenizer.model only: user-defined pieces, which SentencePiece matches in the normalized text
  // (where a piece like "▁▁" can match two spaces).
  AddedTokens normalized_added;
  std::vector<TokenInfo> info;
  TextTable display;                      // what decoding prints for each id (empty for byte pieces)
  std::vector<StringReplace> normalizer;  // applied in order to the text between added tokens
  std::string split_delimiter;            // pre-tokenizer Split, MergedWithPrevious; empty: no split
  BpeModel bpe;
  int32_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  bool add_bos_default = true;

  std::optional<int32_t> find(std::string_view piece) const;
};

// The tokens a loader read, by id, as views into its parsed file.
struct TokenList {
  int32_t vocab_size = 0;
  std::vector<std::string_view> text;  // empty: no token has this id
  std::vector<bool> special;
  std::vector<bool> added;  // matched in the raw text
};

// Fills pieces, vocab_index, added, info and display; `decoder_replace` is the decoder's Replace step,
// applied to every piece that is not a byte piece.
void build_token_tables(const TokenList& tokens, const StringReplace& decoder_replace, TokenizerModel& model);

// The parts of tokenizer_config.json the tokenizer uses.
struct TokenizerConfig {
  std::string file;  // for messages; empty when there is no tokenizer_config.json
  bool add_bos_token = true;
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  struct AddedToken {
    int32_t id = -1;
    std::string content;
    bool special = false;
  };
  std::vector<AddedToken> added_tokens_decoder;
};

TokenizerConfig read_tokenizer_config(const std::filesystem::path& file);

struct SpecialTokenNames {
  std::string bos, eos, pad, unk;
};

// Sets bos/eos/pad/unk ids (tokenizer_config.json's names first, then the loader's defaults) and
// add_bos_default; throws when a name is not a token.
void resolve_special_tokens(const SpecialTokenNames& defaults, const TokenizerConfig& config,
                            const std::string& tokenizer_file, TokenizerModel& model);

// Ids past this are rejected as corrupt input rather than allocated for.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

std::unique_ptr<TokenizerModel> load_tokenizer_json(const std::filesystem::path& file,
                                                    const TokenizerConfig& config);
std::unique_ptr<TokenizerModel> load_sentencepiece_model(const std::filesystem::path& file,
                                                         const TokenizerConfig& config);
// The same SentencePiece BPE tokenizer from a vocabulary held in memory; `origin` names it in errors.
std::unique_ptr<TokenizerModel> load_sentencepiece_vocabulary(const VocabularyData& vocabulary,
                                                              const std::string& origin);

// A Hugging Face BPE tokenizer (Gemma 4's tokenizer.json) from the lists GGUF keeps of it.
std::unique_ptr<TokenizerModel> load_bpe_vocabulary(const VocabularyData& vocabulary, const std::string& origin);
// Checks what both in-memory loaders need: as many scores and types as tokens, no empty token, known types,
// special ids in range. Throws naming `origin` and the field.
void check_vocabulary(const VocabularyData& vocabulary, const std::string& origin);

// SentencePiece's piece types, as GGUF's tokenizer.ggml.token_type stores them too.
enum PieceType : int { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// tokenizer.model's pieces as stored (type: SentencePiece's 1 normal .. 6 byte), for exporting the vocabulary.
struct SentencePieceEntry {
  std::string text;
  float score = 0;
  int type = 1;
};
std::vector<SentencePieceEntry> read_sentencepiece_pieces(const std::filesystem::path& file);

}  // namespace ge::tokenizer_detail
