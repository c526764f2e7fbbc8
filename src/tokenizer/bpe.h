// Byte-pair encoding of one pre-tokenized word, replicating Hugging Face tokenizers' BPE model
// (models/bpe: merge_word + Word::merge_all): the word is split into characters (unknown ones become
// <0xNN> byte pieces, or <unk>), then adjacent pairs are merged lowest rank first, leftmost first among
// equal ranks. A min-heap of candidate merges over a doubly linked list of symbols keeps a word of n
// characters at O(n log n); Gemma's pre-tokenizer never splits, so a "word" is a whole line of text.
// Such a line is cut before each "▁" that no piece can span (see encode), which keeps the heaps small.
//
// SentencePiece's BPE (highest piece score first, leftmost first among ties) is the same algorithm once
// every pair is ranked by the score of the piece it forms, equal scores sharing a rank; its "unused"
// pieces may be formed along the way but are split back into the pair that made them.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/flat_map.h"
#include "tokenizer/piece_table.h"

namespace ge::tokenizer_detail {

struct Merge {
  uint32_t rank = 0;  // lower merges first
  int32_t merged_id = -1;
};

class MergeTable {
 public:
  void reserve(size_t n) { map_.reserve(n); }
  // A pair listed twice keeps its last rank, as HF's HashMap collect does.
  void insert_or_assign(int32_t left, int32_t right, Merge merge) {
    map_.insert_or_assign(key(left, right), merge);
  }
  const Merge* find(int32_t left, int32_t right) const { return map_.find(key(left, right)); }
  void prefetch(int32_t left, int32_t right) const { map_.prefetch(key(left, right)); }

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  FlatU64Map<Merge> map_;
};

struct BpeOptions {
  bool byte_fallback = false;  // unknown characters -> one <0xNN> piece per UTF-8 byte
  bool fuse_unk = false;       // consecutive unknown characters -> a single <unk>
  bool ignore_merges = false;  // a word that is itself a piece is emitted whole
  int32_t unk_id = -1;         // -1: the model has no unknown token
};

// Working memory reused across the words of one encode call.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;  // -1: first
    int32_t next;  // -1: last
    bool removed;
  };
  struct Candidate {
    uint32_t rank;
    uint32_t pos;  // the left symbol
    int32_t merged_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::unordered_map<int32_t, std::pair<int32_t, int32_t>> unused_splits;  // SentencePiece only
  std::vector<int32_t> resegment_stack;
};

class BpeModel {
 public:
  BpeModel() = default;
  // `vocab` / `vocab_index` are the model's pieces (ids [0, vocab size)); `unused` flags the
  // SentencePiece pieces to split back after merging (empty for Hugging Face models).
  BpeModel(const TextTable& vocab, const PieceIndex& vocab_index, MergeTable merges, BpeOptions options,
           std::vector<bool> unused);

  // Appends the ids of `word` to `out`.
  void encode(std::string_view word, const TextTable& vocab, const PieceIndex& vocab_index,
              std::vector<int32_t>& out, BpeScratch& scratch) const;

 private:
  void encode_chunk(std::string_view chunk, const TextTable& vocab, const PieceIndex& vocab_index,
                    std::vector<int32_t>& out, BpeScratch& scratch) const;
  void collect_characters_joined_before_space(const TextTable& vocab);
  bool can_cut_before(std::string_view word, size_t pos, const TextTable& vocab,
                      const PieceIndex& vocab_index) const;
  int32_t character_id(std::string_view ch, const TextTable& vocab, const PieceIndex& vocab_index) const;
  void split_characters(std::string_view word, const TextTable& vocab, const PieceIndex& vocab_index,
                        BpeScratch& scratch) const;
  void add_unknown(std::string_view ch, bool& unk_pending, BpeScratch& scratch) const;
  bool has_byte_pieces(std::string_view ch) const;
  void merge_all(BpeScratch& scratch) const;
  void push_candidate(uint32_t pos, BpeScratch& scratch) const;
  void emit(int32_t id, std::vector<int32_t>& out, BpeScratch& scratch) const;

  MergeTable merges_;
  BpeOptions options_;
  std::array<int32_t, 128> ascii_ids_{};  // fast path for the most common characters, -1: not a piece
  std::array<int32_t, 256> byte_ids_{};   // <0xNN> piece ids, -1: missing
  std::vector<bool> unused_;
  // Characters that come right before a "▁" inside some piece (keys from character_key). No symbol
  // can span a point between a "▁" and a preceding character that is a piece and not in this set.
  FlatU64Map<bool> joined_before_space_;
  bool cut_at_spaces_ = false;
};

}  // namespace ge::tokenizer_detail
