#include "tokenizer/piece_table.h"

#include <bit>
#include <functional>
#include <stdexcept>

namespace ge::tokenizer_detail {

void TextTable::reserve(size_t count, size_t bytes) {
  offsets_.reserve(count + 1);
  arena_.reserve(bytes);
}

void TextTable::push_back(std::string_view text) {
  if (arena_.size() + text.size() > UINT32_MAX)
    throw std::length_error("tokenizer: token texts exceed 4 GiB");
  arena_.append(text);
  offsets_.push_back(static_cast<uint32_t>(arena_.size()));
}

void PieceIndex::build(const TextTable& table, int32_t count) {
  slots_.assign(std::bit_ceil(static_cast<size_t>(count) * 2 + 2), Slot{});
  for (int32_t id = 0; id < count; ++id) {
    const std::string_view piece = table[id];
    if (piece.empty()) continue;
    const size_t hash = hash_of(piece);
    Slot& slot = slots_[slot_of(table, piece, hash)];
    if (slot.id < 0) slot = {tag_of(hash), id};
  }
}

std::optional<int32_t> PieceIndex::find(const TextTable& table, std::string_view piece, size_t hash) const {
  const int32_t id = slots_[slot_of(table, piece, hash)].id;
  if (id < 0) return std::nullopt;
  return id;
}

// Linear probing; the table is at most half full, so runs stay short.
size_t PieceIndex::slot_of(const TextTable& table, std::string_view piece, size_t hash) const {
  const uint32_t tag = tag_of(hash);
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  while (slots_[i].id >= 0 && (slots_[i].tag != tag || table[slots_[i].id] != piece)) i = (i + 1) & mask;
  return i;
}

}  // namespace ge::tokenizer_detail
