#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tokenizer/text_util.h"
#include "tokenizer/utf8.h"

namespace ge::tokenizer_detail {
namespace {

using Symbol = BpeScratch::Symbol;
using Candidate = BpeScratch::Candidate;

// Heap order: std::*_heap keep the element no other is "later" than at the front, i.e. the lowest rank,
// then the leftmost position, as HF's Merge ordering does.
bool later(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

void add_symbol(int32_t id, BpeScratch& scratch) {
  auto& symbols = scratch.symbols;
  const auto index = static_cast<int32_t>(symbols.size());
  if (index > 0) symbols.back().next = index;
  symbols.push_back(Symbol{id, index - 1, -1, false});
}

constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁", which the normalizer puts for " "

// Start of the character that ends at s[pos] (pos > 0), assuming well-formed UTF-8 there.
size_t character_start_before(std::string_view s, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && pos - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return start;
}

uint64_t character_key(std::string_view ch) {
  uint32_t bytes = 0;
  std::memcpy(&bytes, ch.data(), std::min<size_t>(ch.size(), sizeof bytes));
  return (static_cast<uint64_t>(ch.size()) << 32) | bytes;
}

std::string byte_piece(unsigned b) {
  char text[8];
  std::snprintf(text, sizeof text, "<0x%02X>", b);
  return text;
}

}  // namespace

BpeModel::BpeModel(const TextTable& vocab, const PieceIndex& vocab_index, MergeTable merges,
                   BpeOptions options, std::vector<bool> unused)
    : merges_(std::move(merges)), options_(options), unused_(std::move(unused)) {
  for (unsigned c = 0; c < ascii_ids_.size(); ++c)
    ascii_ids_[c] = vocab_index.find(vocab, std::string(1, static_cast<char>(c))).value_or(-1);
  for (unsigned b = 0; b < byte_ids_.size(); ++b)
    byte_ids_[b] = vocab_index.find(vocab, byte_piece(b)).value_or(-1);
  // ignore_merges looks words up whole, and SentencePiece's unused-piece bookkeeping spans the whole
  // input: cutting would change both.
  cut_at_spaces_ = !options_.ignore_merges && unused_.empty() && vocab_index.find(vocab, kSpace).has_value();
  if (cut_at_spaces_) collect_characters_joined_before_space(vocab);
}

void BpeModel::collect_characters_joined_before_space(const TextTable& vocab) {
  for (int32_t id = 0; id < vocab.size(); ++id) {
    const std::string_view piece = vocab[id];
    for (size_t pos = piece.find(kSpace, 1); pos != std::string_view::npos;
         pos = piece.find(kSpace, pos + 1)) {
      const size_t start = character_start_before(piece, pos);
      joined_before_space_.insert_or_assign(character_key(piece.substr(start, pos - start)), true);
    }
  }
}

// A symbol spanning the point before word[pos] would contain the preceding character followed by "▁",
// so if no piece does, merges on either side never meet and the parts can be encoded separately (the
// heap order restricted to one part is the order that part would see alone). The character must be a
// piece itself: byte-fallback symbols do not spell their text.
bool BpeModel::can_cut_before(std::string_view word, size_t pos, const TextTable& vocab,
                              const PieceIndex& vocab_index) const {
  const size_t start = character_start_before(word, pos);
  const std::string_view ch = word.substr(start, pos - start);
  if (utf8_char_length(word, start) != ch.size()) return false;
  return character_id(ch, vocab, vocab_index) >= 0 && joined_before_space_.find(character_key(ch)) == nullptr;
}

int32_t BpeModel::character_id(std::string_view ch, const TextTable& vocab,
                               const PieceIndex& vocab_index) const {
  const auto first = static_cast<unsigned char>(ch[0]);
  if (ch.size() == 1 && first < ascii_ids_.size()) return ascii_ids_[first];
  return vocab_index.find(vocab, ch).value_or(-1);
}

void BpeModel::encode(std::string_view word, const TextTable& vocab, const PieceIndex& vocab_index,
                      std::vector<int32_t>& out, BpeScratch& scratch) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = vocab_index.find(vocab, word)) {
      out.push_back(*id);
      return;
    }
  }
  size_t start = 0;
  if (cut_at_spaces_) {
    for (size_t pos = word.find(kSpace, 1); pos != std::string_view::npos; pos = word.find(kSpace, pos + 1)) {
      if (!can_cut_before(word, pos, vocab, vocab_index)) continue;
      encode_chunk(word.substr(start, pos - start), vocab, vocab_index, out, scratch);
      start = pos;
    }
  }
  encode_chunk(word.substr(start), vocab, vocab_index, out, scratch);
}

void BpeModel::encode_chunk(std::string_view chunk, const TextTable& vocab, const PieceIndex& vocab_index,
                            std::vector<int32_t>& out, BpeScratch& scratch) const {
  scratch.unused_splits.clear();
  split_characters(chunk, vocab, vocab_index, scratch);
  merge_all(scratch);
  for (int32_t i = 0; i >= 0; i = scratch.symbols[i].next) emit(scratch.symbols[i].id, out, scratch);
}

// HF's merge_word. Bytes that are not well-formed UTF-8 (which a Rust &str cannot hold) are taken one
// at a time and so reach the byte fallback.
void BpeModel::split_characters(std::string_view word, const TextTable& vocab, const PieceIndex& vocab_index,
                                BpeScratch& scratch) const {
  scratch.symbols.clear();
  bool unk_pending = false;
  for (size_t pos = 0; pos < word.size();) {
    const size_t length = std::max<size_t>(utf8_char_length(word, pos), 1);
    const std::string_view ch = word.substr(pos, length);
    pos += length;
    const int32_t id = character_id(ch, vocab, vocab_index);
    if (id < 0) {
      add_unknown(ch, unk_pending, scratch);
      continue;
    }
    if (unk_pending) add_symbol(options_.unk_id, scratch);
    unk_pending = false;
    add_symbol(id, scratch);
  }
  if (unk_pending) add_symbol(options_.unk_id, scratch);
}

// A pending <unk> is held back so that fuse_unk can extend it. Like HF, byte pieces are added without
// first placing a pending <unk> (which only exists when some other character lacked byte pieces).
void BpeModel::add_unknown(std::string_view ch, bool& unk_pending, BpeScratch& scratch) const {
  if (options_.byte_fallback && has_byte_pieces(ch)) {
    for (const char b : ch) add_symbol(byte_ids_[static_cast<unsigned char>(b)], scratch);
    return;
  }
  if (options_.unk_id < 0)
    throw std::runtime_error(std::string("tokenizer: character ") + in_quotes(ch) +
                             " has no piece and there is no <unk>");
  if (unk_pending && !options_.fuse_unk) add_symbol(options_.unk_id, scratch);
  unk_pending = true;
}

bool BpeModel::has_byte_pieces(std::string_view ch) const {
  return std::all_of(ch.begin(), ch.end(),
                     [&](char b) { return byte_ids_[static_cast<unsigned char>(b)] >= 0; });
}

// HF's Word::merge_all. A popped candidate is stale when its left symbol was absorbed or now forms a pair
// that merges into something else; like HF, only the merged id is compared.
void BpeModel::merge_all(BpeScratch& scratch) const {
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  heap.clear();
  for (size_t i = 0; i + 1 < symbols.size(); ++i) push_candidate(static_cast<uint32_t>(i), scratch);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.removed || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* merge = merges_.find(left.id, right.id);
    if (merge == nullptr || merge->merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    left.next = right.next;
    right.removed = true;
    if (left.next >= 0) symbols[left.next].prev = static_cast<int32_t>(top.pos);
    if (left.prev >= 0) push_candidate(static_cast<uint32_t>(left.prev), scratch);
    if (left.next >= 0) push_candidate(top.pos, scratch);
  }
}

// Queues the merge of symbol `pos` with its successor, if the pair merges. SentencePiece remembers, per
// unused piece, the pair most recently queued to form it: that is how it splits such a piece back.
void BpeModel::push_candidate(uint32_t pos, BpeScratch& scratch) const {
  const Symbol& left = scratch.symbols[pos];
  const Symbol& right = scratch.symbols[left.next];
  const Merge* merge = merges_.find(left.id, right.id);
  if (merge == nullptr) return;
  scratch.heap.push_back(Candidate{merge->rank, pos, merge->merged_id});
  std::push_heap(scratch.heap.begin(), scratch.heap.end(), later);
  if (!unused_.empty() && unused_[merge->merged_id])
    scratch.unused_splits[merge->merged_id] = {left.id, right.id};
}

void BpeModel::emit(int32_t id, std::vector<int32_t>& out, BpeScratch& scratch) const {
  if (unused_.empty() || !unused_[id]) {
    out.push_back(id);
    return;
  }
  auto& stack = scratch.resegment_stack;
  stack.assign(1, id);
  while (!stack.empty()) {
    const int32_t piece = stack.back();
    stack.pop_back();
    const auto split = unused_[piece] ? scratch.unused_splits.find(piece) : scratch.unused_splits.end();
    if (split == scratch.unused_splits.end()) {
      out.push_back(piece);
      continue;
    }
    stack.push_back(split->second.second);
    stack.push_back(split->second.first);
  }
}

}  // namespace ge::tokenizer_detail
