// The K mixes (q4_k_m, q5_k_m, q6_k): the type llama-quantize gives each tensor of a Gemma model
// (llama_tensor_get_type in llama.cpp's src/llama-quant.cpp, without an importance matrix or overrides),
// so that `gemma convert --outtype q4_k_m` writes the file `llama-quantize F16.gguf Q4_K_M` would:
//   - the output matrix, and token_embd when tied to it (Gemma: no output.weight; gemma3n's
//     per_layer_token_embd counts as a token embedding too): Q6_K, or Q8_0 when its rows are not whole
//     256-value blocks;
//   - attn_v and ffn_down of the layers use_more_bits picks: Q6_K for q4_k_m and q5_k_m;
//   - every other weight matrix: the mix's base type, Q4_K / Q5_K / Q6_K;
//   - then rows that are not whole blocks of the chosen type fall back: Q4_K -> Q5_0, Q5_K -> Q5_1,
//     Q6_K -> Q8_0, and to F16 when even 32-value blocks do not fit (llama-quantize gives up on a Q8_0
//     tensor of such rows; we write F16);
//   - norms, 1-D tensors, MoE routers (ffn_gate_inp) and the small AltUp / LAuReL / per-layer projection
//     matrices are not quantized.
#include <algorithm>
#include <cstdio>

#include "convert/conversion.h"

namespace ge::convert {
namespace {

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// llama-quantize's tensor_allows_quantization, for the tensors a Gemma GGUF has.
bool quantizable(std::string_view name, size_t dims) {
  if (dims < 2 || !name.ends_with("weight") || contains(name, "_norm.weight")) return false;
  for (std::string_view kept : {"altup", "laurel", "per_layer_model_proj", "ffn_gate_inp"})
    if (contains(name, kept)) return false;
  return true;
}

enum class Role { kOutput, kTokenEmbedding, kAttentionV, kFfnDown, kOther };

// llama-quantize's tensor_get_category, by name.
Role role_of(std::string_view name) {
  if (name == "output.weight") return Role::kOutput;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Role::kTokenEmbedding;
  if (contains(name, "attn_v.weight")) return Role::kAttentionV;
  if (contains(name, "ffn_down")) return Role::kFfnDown;
  return Role::kOther;
}

// The layers that get more bits: the first and last eighth, and every third layer in between.
bool use_more_bits(int64_t layer, int64_t layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

// "blk.N.": N, else -1.
int64_t layer_of(std::string_view name) {
  long long layer = -1;
  const std::string s(name);
  if (std::sscanf(s.c_str(), "blk.%lld.", &layer) != 1) return -1;
  return layer;
}

DType base_type(OutType mix) {
  switch (mix) {
    case OutType::Q4_K_M:
      return DType::Q4_K;
    case OutType::Q5_K_M:
      return DType::Q5_K;
    default:
      return DType::Q6_K;
  }
}

bool whole_blocks(DType t, int64_t columns) {
  return columns % dtype_info(t).block_elems == 0;
}

// llama-quantize's tensor_type_fallback: a type of 256-value blocks becomes one of 32 of about as many
// bits; if even those do not fit, F16.
DType fall_back(DType t, int64_t columns) {
  if (whole_blocks(t, columns)) return t;
  const DType fallback = t == DType::Q4_K ? DType::Q5_0 : t == DType::Q5_K ? DType::Q5_1 : DType::Q8_0;
  return whole_blocks(fallback, columns) ? fallback : DType::F16;
}

DType role_type(OutType mix, const MixModel& model, Role role, int64_t layer, int64_t columns) {
  const DType base = base_type(mix);
  // The output matrix (llama.cpp checks its row length against the base type's block, before any
  // fallback).
  if (role == Role::kOutput || (role == Role::kTokenEmbedding && model.tied_embeddings))
    return whole_blocks(base, columns) ? DType::Q6_K : DType::Q8_0;
  const bool more_bits_mix = mix == OutType::Q4_K_M || mix == OutType::Q5_K_M;
  // llama.cpp counts attn_v tensors and ffn_down tensors in layer order; with one per layer the count
  // is the layer index. attn_v is spread over the attn_v tensors, ffn_down over the block count.
  if (more_bits_mix && role == Role::kAttentionV && use_more_bits(layer, model.attn_v_tensors))
    return DType::Q6_K;
  if (more_bits_mix && role == Role::kFfnDown && use_more_bits(layer, model.layers)) return DType::Q6_K;
  return base;
}

}  // namespace

std::optional<DType> mix_type(OutType mix, const MixModel& model, std::string_view name,
                              const std::vector<int64_t>& shape) {
  if (!quantizable(name, shape.size())) return std::nullopt;
  const int64_t columns = shape.back();  // ggml's ne[0]
  return fall_back(role_type(mix, model, role_of(name), layer_of(name), columns), columns);
}

void assign_mix_types(OutType mix, TensorPlan& plan) {
  MixModel model;
  for (const PlannedTensor& t : plan.tensors()) {
    model.layers = std::max(model.layers, layer_of(t.name) + 1);
    if (role_of(t.name) == Role::kAttentionV) ++model.attn_v_tensors;
    if (role_of(t.name) == Role::kOutput) model.tied_embeddings = false;
  }
  for (PlannedTensor& t : plan.tensors())
    if (const std::optional<DType> type = mix_type(mix, model, t.name, t.shape)) t.out = *type;
}

}  // namespace ge::convert
