// The parts of a decoder's attention every Gemma family shares: RoPE tables for the rows of a forward step,
// and attention of those rows' queries over their sequences' KV caches (a prompt chunk of one sequence, or
// one decode row of each of several).
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kernels/thread_pool.h"
#include "nn/kv_cache.h"

namespace ge::nn {

// cos/sin of each row's position for each distinct set of RoPE frequencies among a model's layers, NeoX
// layout (head_dim / 2 angles per row: dimension j pairs with j + head_dim / 2).
class RopeTables {
 public:
  RopeTables() = default;
  // Per layer: its inverse frequencies (head_dim / 2 of them; 0 leaves a pair unrotated, as Gemma 4's
  // proportional RoPE does past its rotated share). rows: most rows a step holds.
  RopeTables(const std::vector<std::vector<double>>& layer_inv_freq, int64_t rows);
  // Per layer (base, linear scale) over head_dim: inv_freq[j] = base^(-2j / head_dim) / scale.
  static std::vector<double> default_inv_freq(double base, double scale, int64_t head_dim);

  void prepare(const int64_t* positions, int64_t n);
  // Rotates row t's `heads` heads of x in place with layer `layer`'s table.
  void apply(int64_t layer, int64_t t, float* x, int64_t heads) const;

 private:
  std::vector<std::vector<double>> kinds_;
  std::vector<int> layer_kind_;
  std::vector<std::vector<float>> cos_, sin_;  // per kind: [rows, head_dim / 2]
};

// The queries of one forward step and what each row attends to.
struct AttentionStep {
  const float* q = nullptr;                 // [n, num_heads * head_dim]
  int64_t n = 0;
  std::span<KVCache* const> caches;         // per row
  const int64_t* key_first = nullptr;       // per row: first position it sees
  const int64_t* key_last = nullptr;        // per row: last position it sees
  bool one_sequence = true;                 // rows are consecutive positions of one cache (a prompt chunk)
};

// out[n, num_heads * head_dim] = softmax(scale * q K^T (soft-capped when softcap > 0)) V over the keys of
// cache layer `layer`; query head h reads KV head h / (num_heads / num_kv_heads).
void attend_cached(kernels::ThreadPool& pool, const AttentionStep& step, int64_t layer, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, float scale, float softcap, float* out);

}  // namespace ge::nn
