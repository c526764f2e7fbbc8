#include "models/decoder.h"

#include <algorithm>
#include <stdexcept>

namespace ge::models {

namespace {
constexpr size_t kDecodeGroup = 16;
}  // namespace

Decoder::Decoder(int64_t rows) : positions_(rows), caches_(rows) {
  decode_tokens_.reserve(kDecodeGroup);
}

void Decoder::set_prefill_precision(kernels::Precision p) {
  if (p == kernels::Precision::kReducedActivations) prepare_reduced_activations();
  prefill_precision_ = p;
}

void Decoder::set_decode_precision(kernels::Precision p) {
  if (p == kernels::Precision::kReducedActivations) prepare_reduced_activations();
  decode_precision_ = p;
}

void Decoder::check_blocks(std::span<const EmbeddingBlock> blocks, int64_t, int64_t) const {
  if (!blocks.empty())
    throw std::runtime_error(std::string(family_name()) +
                             ": image embeddings are not supported (its vision tower is not run)");
}

void Decoder::forward(std::span<const int32_t> tokens, int64_t start_pos, nn::KVCache& cache,
                      kernels::ThreadPool& pool, float* logits, bool all_positions, const HiddenObserver* observer,
                      std::span<const EmbeddingBlock> blocks) {
  const auto total = static_cast<int64_t>(tokens.size());
  check_blocks(blocks, total, start_pos);
  check_tokens(tokens, start_pos, blocks);
  check_context(cache, start_pos, total);
  const int64_t vocab = shape().vocab_size;
  size_t first_block = 0;
  for (int64_t done = 0; done < total;) {
    const int64_t end = step_end(blocks.subspan(first_block), done, std::min(done + max_chunk(), total));
    step_blocks_.clear();
    for (; first_block < blocks.size() && blocks[first_block].offset < end; ++first_block) {
      EmbeddingBlock b = blocks[first_block];
      b.offset -= done;
      step_blocks_.push_back(b);
    }
    float* out = all_positions ? logits + done * vocab : (end == total ? logits : nullptr);
    for (int64_t t = 0; t < end - done; ++t) {
      positions_[t] = start_pos + done + t;
      caches_[t] = &cache;
    }
    one_sequence_ = true;
    step_precision_ = end - done > 1 ? prefill_precision_ : decode_precision_;
    forward_rows(tokens.subspan(done, end - done), pool, observer, step_blocks_);
    if (out && all_positions)
      lm_head(0, end - done, pool, out);
    else if (out)
      lm_head(end - done - 1, 1, pool, out);
    done = end;
  }
}

void Decoder::decode(std::span<const DecodeRow> rows, kernels::ThreadPool& pool, float* logits) {
  const int64_t vocab = shape().vocab_size;
  check_decode_rows(rows, vocab);
  const size_t group = std::min(kDecodeGroup, static_cast<size_t>(chunk_capacity()));
  for (size_t done = 0; done < rows.size(); done += group) {
    const size_t n = std::min(rows.size() - done, group);
    decode_tokens_.clear();
    for (size_t t = 0; t < n; ++t) {
      decode_tokens_.push_back(rows[done + t].token);
      positions_[t] = rows[done + t].position;
      caches_[t] = rows[done + t].cache;
    }
    check_tokens(decode_tokens_, positions_[0], {});
    one_sequence_ = false;
    step_precision_ = decode_precision_;
    forward_rows(decode_tokens_, pool, nullptr, {});
    lm_head(0, static_cast<int64_t>(decode_tokens_.size()), pool, logits + done * vocab);
  }
}

}  // namespace ge::models
