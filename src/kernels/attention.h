// Attention of a whole sequence at once where every token sees every other (SigLIP's encoder): GEMMs over
// blocks of queries instead of one query at a time, as the batched work it is.
#pragma once
#include <cstdint>

#include "kernels/ops.h"
#include "kernels/thread_pool.h"

namespace ge::kernels {

// For each head h: out_h = softmax(scale * Q_h K_h^T) V_h over all n tokens, no mask. q, k, v and out are
// [n, heads * head_dim] row-major (head h in columns [h * head_dim, (h + 1) * head_dim)). Each task takes
// one head and a block of queries: S = Q K^T for the block (kept per thread: never an n x n matrix),
// a row softmax, then S V.
void attend_all(ThreadPool& pool, const float* q, const float* k, const float* v, int64_t n, int64_t heads,
                int64_t head_dim, float scale, float* out);

// Attention of m queries of one head over a KV cache ring (a decoder's prompt chunk): query i (row i of q,
// stride ldq) sees the cached positions [first[i], last[i]], with s = scale * q.K soft-capped to
// softcap * tanh(s / softcap) when softcap > 0; out row i (stride ldo) = softmax(s) V. The keys the m queries
// see are gathered once (f16 widened), then two GEMMs and a row softmax replace m separate passes over them.
// Single-threaded: callers run one head and tile of queries per task. Scores take m x (keys seen) floats.
void attend_rows(const float* q, int64_t ldq, int64_t m, const KVRows& kv, const int64_t* first,
                 const int64_t* last, int64_t head_dim, float scale, float softcap, float* out, int64_t ldo);

// Rows of s ([rows, n], row stride ld) -> softmax(scale * s) in place, in f32 with a vectorized exp.
void softmax_rows(float* s, int64_t rows, int64_t n, int64_t ld, float scale);

}  // namespace ge::kernels
