// Token texts by id, stored back to back in one arena, and a piece -> id index over a prefix of them.
// Offsets rather than pointers, so the tables stay valid when moved.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ge::tokenizer_detail {

class TextTable {
 public:
  void reserve(size_t count, size_t bytes);
  void push_back(std::string_view text);
  std::string_view operator[](int32_t id) const {
    return {arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]};
  }
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }

 private:
  std::string arena_;
  std::vector<uint32_t> offsets_{0};
};

class PieceIndex {
 public:
  // Indexes ids [0, count) of `table`; empty texts (ids nothing was assigned to) are left out and the
  // first id wins when a text repeats.
  void build(const TextTable& table, int32_t count);
  std::optional<int32_t> find(const TextTable& table, std::string_view piece) const {
    return find(table, piece, hash_of(piece));
  }

  // For batched lookups: hash first, prefetch, find later with the same hash.
  static size_t hash_of(std::string_view piece) { return std::hash<std::string_view>{}(piece); }
  void prefetch(size_t hash) const { __builtin_prefetch(&slots_[hash & (slots_.size() - 1)]); }
  std::optional<int32_t> find(const TextTable& table, std::string_view piece, size_t hash) const;

 private:
  // Part of the hash kept beside each id, so that probing past other pieces rarely reads their text.
  struct Slot {
    uint32_t tag = 0;
    int32_t id = -1;  // -1: empty
  };
  static uint32_t tag_of(size_t hash) { return static_cast<uint32_t>(hash >> 32); }
  size_t slot_of(const TextTable& table, std::string_view piece, size_t hash) const;

  std::vector<Slot> slots_ = std::vector<Slot>(1);
};

}  // namespace ge::tokenizer_detail
