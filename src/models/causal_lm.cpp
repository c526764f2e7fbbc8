#include "models/causal_lm.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace ge::models {

int64_t step_end(std::span<const EmbeddingBlock> blocks, int64_t begin, int64_t limit) {
  int64_t end = limit;
  for (const EmbeddingBlock& b : blocks)
    if (b.offset < end && b.offset + b.count > end) end = b.offset > begin ? b.offset : b.offset + b.count;
  return end;
}

float embedding_scale(int64_t width) {
  return bf16_to_f32(f32_to_bf16(static_cast<float>(std::sqrt(static_cast<double>(width)))));
}

void check_context(const nn::KVCache& cache, int64_t start_pos, int64_t n_tokens) {
  if (start_pos + n_tokens > cache.context())
    throw std::runtime_error("context length " + std::to_string(cache.context()) + " exceeded: " +
                             std::to_string(start_pos + n_tokens) + " positions requested");
}

void check_decode_rows(std::span<const DecodeRow> rows, int64_t vocab_size) {
  for (size_t t = 0; t < rows.size(); ++t) {
    const DecodeRow& r = rows[t];
    if (r.token < 0 || r.token >= vocab_size)
      throw std::runtime_error("token id " + std::to_string(r.token) + " of decode row " + std::to_string(t) +
                               " is outside the vocabulary (" + std::to_string(vocab_size) + " rows)");
    check_context(*r.cache, r.position, 1);
    for (size_t u = 0; u < t; ++u)
      if (rows[u].cache == r.cache) throw std::invalid_argument("two decode rows share one cache");
  }
}

bool can_rewind(const nn::KVCache& cache, int64_t sliding_window, int64_t length, int64_t keep) {
  for (int64_t l = 0; l < cache.layers(); ++l)
    if (cache.capacity(l) < cache.context() && length - keep > cache.capacity(l) - sliding_window) return false;
  return true;
}

}  // namespace ge::models
