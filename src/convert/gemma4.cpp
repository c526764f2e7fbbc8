// Gemma 4 checkpoints -> GGUF arch "gemma4", the text model only, as llama.cpp's converter (Gemma4Model in
// its conversion/gemma.py) writes it: head widths, KV heads and MLP widths per layer type, the sliding
// layers as a list of flags, one rope_freqs tensor whose factors make the full layers' RoPE proportional
// (factor 1e30 for the pairs it leaves unrotated), the router's scale and the per-expert scale beside the
// stacked expert matrices, and the tokenizer.json vocabulary with its merges. Norms are copied unshifted
// (Gemma 4's RMSNorm multiplies by w itself). The vision and audio towers and their embedders stay out.
#include <algorithm>

#include "convert/conversion.h"
#include "convert/vocab.h"
#include "models/gemma4/config.h"

namespace ge::convert {
namespace {

const char* const kArch = "gemma4";

// llama.cpp's marker of a pair its RoPE leaves unrotated: theta / 1e30 turns it by nothing.
constexpr float kUnrotated = 1e30f;



// The first layer of each kind: llama.cpp keeps one head width and RoPE per kind.
struct LayerKinds {
  const gemma4::LayerConfig* full = nullptr;
  const gemma4::LayerConfig* sliding = nullptr;
};

LayerKinds layer_kinds(const gemma4::Config& c, const std::string& config_file) {
  LayerKinds k;
  for (const gemma4::LayerConfig& l : c.layers) {
    const gemma4::LayerConfig*& first = l.sliding ? k.sliding : k.full;
    if (!first) first = &l;
  }
  if (!k.sliding) k.sliding = k.full;  // no sliding layer: its keys only repeat the full layers' values
  // llama.cpp turns every pair of a sliding layer at theta^(-2j / head_dim) and nothing else.
  const gemma4::Rope& r = k.sliding->rope;
  if (r.factor != 1 || r.rotated_pairs != k.sliding->head_dim / 2)
    fail(config_file + ": rope_parameters.sliding_attention: only the default RoPE over the whole head can be "
                       "written for llama.cpp's gemma4");
  return k;
}

// A per-layer value as llama.cpp reads it: one number when every layer has it, else an array (INT32, as
// gguf-py writes lists).
template <class F>
void add_per_layer(formats::GgufWriter& w, const std::string& key, const gemma4::Config& c, F value) {
  std::vector<int32_t> values;
  for (const gemma4::LayerConfig& l : c.layers) values.push_back(static_cast<int32_t>(value(l)));
  if (std::all_of(values.begin(), values.end(), [&](int32_t v) { return v == values[0]; }))
    w.add(key, static_cast<uint32_t>(values[0]));
  else
    w.add(key, std::move(values));
}

void add_hyperparameters(formats::GgufWriter& w, const gemma4::Config& c, const LayerKinds& kinds, OutType out) {
  const std::string a = std::string(kArch) + ".";
  w.add(a + "block_count", static_cast<uint32_t>(c.num_layers));
  w.add(a + "context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add(a + "embedding_length", static_cast<uint32_t>(c.hidden_size));
  add_per_layer(w, a + "feed_forward_length", c, [](const gemma4::LayerConfig& l) { return l.intermediate_size; });
  w.add(a + "attention.head_count", static_cast<uint32_t>(c.num_heads));
  add_per_layer(w, a + "attention.head_count_kv", c, [](const gemma4::LayerConfig& l) { return l.num_kv_heads; });
  w.add(a + "rope.freq_base", static_cast<float>(kinds.full->rope.theta));
  w.add(a + "rope.freq_base_swa", static_cast<float>(kinds.sliding->rope.theta));
  w.add(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  if (c.enable_moe_block) {
    w.add(a + "expert_count", static_cast<uint32_t>(c.num_experts));
    w.add(a + "expert_used_count", static_cast<uint32_t>(c.top_k_experts));
  }
  w.add(a + "attention.key_length", static_cast<uint32_t>(kinds.full->head_dim));
  w.add(a + "attention.value_length", static_cast<uint32_t>(kinds.full->head_dim));
  w.add("general.file_type", file_type_id(out));
  if (c.final_logit_softcapping)
    w.add(a + "final_logit_softcapping", static_cast<float>(*c.final_logit_softcapping));
  w.add(a + "attention.sliding_window", static_cast<uint32_t>(c.sliding_window));
  w.add(a + "attention.shared_kv_layers", static_cast<uint32_t>(c.num_kv_shared_layers));
  w.add(a + "embedding_length_per_layer_input", static_cast<uint32_t>(c.hidden_size_per_layer_input));
  std::vector<bool> sliding;
  for (const gemma4::LayerConfig& l : c.layers) sliding.push_back(l.sliding);
  w.add(a + "attention.sliding_window_pattern", std::move(sliding));
  w.add(a + "attention.key_length_swa", static_cast<uint32_t>(kinds.sliding->head_dim));
  w.add(a + "attention.value_length_swa", static_cast<uint32_t>(kinds.sliding->head_dim));
  if (c.enable_moe_block) w.add(a + "expert_feed_forward_length", static_cast<uint32_t>(c.moe_intermediate_size));
  w.add(a + "rope.dimension_count", static_cast<uint32_t>(kinds.full->head_dim));
  w.add(a + "rope.dimension_count_swa", static_cast<uint32_t>(kinds.sliding->head_dim));
  w.add("general.quantization_version", uint32_t{2});
}

// The full layers' RoPE: factor for the rotated pairs (1 unless the checkpoint scales them), kUnrotated beyond.
void plan_rope_freqs(const LayerKinds& kinds, TensorPlan& plan) {
  const gemma4::LayerConfig& full = *kinds.full;
  const int64_t pairs = full.head_dim / 2, rotated = std::min(full.rope.rotated_pairs, pairs);
  PlannedTensor t{"rope_freqs.weight", {}, DType::F32, {pairs}};
  t.values.assign(static_cast<size_t>(pairs), kUnrotated);
  std::fill_n(t.values.begin(), rotated, static_cast<float>(full.rope.factor));
  plan.add(std::move(t));
}

// The token embedding, and the per-layer table with as many rows (llama.cpp indexes both with any id).
void plan_embeddings(const gemma4::Config& c, const std::string& prefix, TensorPlan& plan) {
  plan.add("token_embd.weight", prefix + "embed_tokens.weight", {c.vocab_size, c.hidden_size});
  if (c.hidden_size_per_layer_input == 0) return;
  const int64_t width = c.num_layers * c.hidden_size_per_layer_input;
  const Tensor& table = plan.get(prefix + "embed_tokens_per_layer.weight", {c.vocab_size_per_layer_input, width});
  plan.add(PlannedTensor{"per_layer_token_embd.weight", {&table}, plan.type_for(table.shape), {c.vocab_size, width}});
  plan.add("per_layer_model_proj.weight", prefix + "per_layer_model_projection.weight", {width, c.hidden_size});
  plan.add("per_layer_proj_norm.weight", prefix + "per_layer_projection_norm.weight", {c.hidden_size_per_layer_input});
}

// KV-shared layers may lack k/v projections (llama.cpp needs none there) and K=V layers lack v_proj.
void plan_attention(const gemma4::Config& c, const gemma4::LayerConfig& l, bool own_kv, const std::string& src,
                    const std::string& dst, TensorPlan& plan) {
  const int64_t d = c.hidden_size, q_dim = c.num_heads * l.head_dim, kv_dim = l.num_kv_heads * l.head_dim;
  plan.add(dst + "attn_norm.weight", src + "input_layernorm.weight", {d});
  plan.add(dst + "attn_q.weight", src + "self_attn.q_proj.weight", {q_dim, d});
  const auto optional = [&](const std::string& gguf, const std::string& hf, const std::vector<int64_t>& shape,
                            bool required) {
    if (required || plan.find(src + hf)) plan.add(dst + gguf, src + hf, shape);
  };
  optional("attn_k.weight", "self_attn.k_proj.weight", {kv_dim, d}, own_kv);
  // A K=V layer has no v_proj; llama.cpp takes a missing attn_v for K=V, so none may be written for it.
  if (!l.k_eq_v) optional("attn_v.weight", "self_attn.v_proj.weight", {kv_dim, d}, own_kv);
  plan.add(dst + "attn_output.weight", src + "self_attn.o_proj.weight", {d, q_dim});
  plan.add(dst + "attn_q_norm.weight", src + "self_attn.q_norm.weight", {l.head_dim});
  optional("attn_k_norm.weight", "self_attn.k_norm.weight", {l.head_dim}, own_kv);
  plan.add(dst + "post_attention_norm.weight", src + "post_attention_layernorm.weight", {d});
}


// The router (kept f32, as llama.cpp's converter and llama-quantize keep every ffn_gate_inp: a rounded
// router can pick other experts) and the stacked experts, gate rows before up rows as in the checkpoint.
void plan_experts(const gemma4::Config& c, const std::string& src, const std::string& dst, TensorPlan& plan) {
  const int64_t d = c.hidden_size, n = c.num_experts, f = c.moe_intermediate_size;
  plan.add(dst + "ffn_gate_inp.weight", src + "router.proj.weight", {n, d}).out = DType::F32;
  plan.add(dst + "ffn_gate_inp.scale", src + "router.scale", {d});
  plan.add(dst + "ffn_gate_up_exps.weight", src + "experts.gate_up_proj", {n, 2 * f, d});
  plan.add(dst + "ffn_down_exps.weight", src + "experts.down_proj", {n, d, f});
  plan.add(dst + "ffn_down_exps.scale", src + "router.per_expert_scale", {n});
  plan.add(dst + "pre_ffw_norm_2.weight", src + "pre_feedforward_layernorm_2.weight", {d});
  plan.add(dst + "post_ffw_norm_1.weight", src + "post_feedforward_layernorm_1.weight", {d});
  plan.add(dst + "post_ffw_norm_2.weight", src + "post_feedforward_layernorm_2.weight", {d});
}

void plan_layer_extras(const gemma4::Config& c, const std::string& src, const std::string& dst, TensorPlan& plan) {
  const int64_t d = c.hidden_size, p = c.hidden_size_per_layer_input;
  if (p > 0) {
    plan.add(dst + "inp_gate.weight", src + "per_layer_input_gate.weight", {p, d});
    plan.add(dst + "proj.weight", src + "per_layer_projection.weight", {d, p});
    plan.add(dst + "post_norm.weight", src + "post_per_layer_input_norm.weight", {d});
  }
  if (plan.find(src + "layer_scalar")) plan.add(dst + "layer_output_scale.weight", src + "layer_scalar", {1});
}

}  // namespace

std::string convert_gemma4(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w, TensorPlan& plan) {
  const std::string config_file = (ckpt.dir / "config.json").string();
  const gemma4::Config c = gemma4::resolve_config(ckpt.config, config_file);
  const LayerKinds kinds = layer_kinds(c, config_file);
  const std::string prefix = text_model_prefix(ckpt);

  add_general(w, kArch, ckpt.dir);
  add_hyperparameters(w, c, kinds, out_type);
  add_bpe_vocabulary(w, ckpt, c.vocab_size);

  plan_rope_freqs(kinds, plan);
  plan_embeddings(c, prefix, plan);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string src = prefix + "layers." + std::to_string(l) + ".";
    const std::string dst = "blk." + std::to_string(l) + ".";
    const gemma4::LayerConfig& lc = c.layers[l];
    plan_attention(c, lc, c.kv_source(l) == l, src, dst, plan);
    plan_mlp(c.hidden_size, lc.intermediate_size, src, dst, plan);
    if (c.enable_moe_block) plan_experts(c, src, dst, plan);
    plan_layer_extras(c, src, dst, plan);
  }
  plan.add("output_norm.weight", prefix + "norm.weight", {c.hidden_size});
  plan.check_all_used(is_multimodal_tower_tensor,
                      "a gemma4 text model with " + std::to_string(c.num_layers) + " layers (config.json)");
  return kArch;
}

}  // namespace ge::convert
