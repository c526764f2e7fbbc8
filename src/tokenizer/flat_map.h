// Open-addressing hash map from 64-bit keys to small values. The tokenizer's hot lookups (token pair ->
// merge, trie edge -> node) go through it: one flat array, no node allocations, a few hundred thousand
// entries built in milliseconds.
#pragma once
#include <bit>
#include <cstdint>
#include <vector>

namespace ge::tokenizer_detail {

template <typename Value>
class FlatU64Map {
 public:
  FlatU64Map() { rehash(16); }

  void reserve(size_t n) {
    if (n * 2 > slots_.size()) rehash(std::bit_ceil(n * 2));
  }

  // Later insertions of a key replace earlier ones.
  void insert_or_assign(uint64_t key, const Value& value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    Slot& s = slots_[probe(key)];
    if (s.key == kEmpty) ++size_;
    s.key = key;
    s.value = value;
  }

  void prefetch(uint64_t key) const { __builtin_prefetch(&slots_[home(key)]); }

  const Value* find(uint64_t key) const {
    const Slot& s = slots_[probe(key)];
    return s.key == kEmpty ? nullptr : &s.value;
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    Value value{};
  };

  // Fibonacci hashing: the high bits of key * 2^64/phi spread consecutive ids well.
  size_t home(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }

  size_t probe(uint64_t key) const {
    size_t i = home(key);
    const size_t mask = slots_.size() - 1;
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask;
    return i;
  }

  void rehash(size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    shift_ = 64 - std::countr_zero(capacity);
    for (const Slot& s : old)
      if (s.key != kEmpty) slots_[probe(s.key)] = s;
  }

  std::vector<Slot> slots_;
  int shift_ = 64;
  size_t size_ = 0;
};

}  // namespace ge::tokenizer_detail
