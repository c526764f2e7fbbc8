// Gemma 3n checkpoints -> GGUF arch "gemma3n", the text model only: llama.cpp's keys and tensor names
// (Gemma3NModel), with Ollama's treatment where the two differ: activation sparsity scales of 0 (not
// -infinity) for dense layers, altup.correct_scale, and the correction coefficients clipped to
// altup_coef_clip. Unlike Gemma 1-3, 3n's RMSNorm multiplies by w itself, so norms are copied unshifted.
// The audio and vision towers and their embedders stay out of the file.
#include "convert/conversion.h"
#include "convert/vocab.h"
#include "models/gemma3n/config.h"

namespace ge::convert {
namespace {

const char* const kArch = "gemma3n";



template <class T, class F>
std::vector<T> per_layer(const gemma3n::Config& c, F value) {
  std::vector<T> out;
  for (const gemma3n::LayerConfig& l : c.layers) out.push_back(value(l));
  return out;
}

void add_hyperparameters(formats::GgufWriter& w, const gemma3n::Config& c, OutType out) {
  const std::string a = std::string(kArch) + ".";
  w.add(a + "block_count", static_cast<uint32_t>(c.num_layers));
  w.add(a + "context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add(a + "embedding_length", static_cast<uint32_t>(c.hidden_size));
  // An array, as gguf-py writes a list-valued intermediate_size (INT32 elements); llama.cpp reads a
  // width per layer from it.
  w.add(a + "feed_forward_length", per_layer<int32_t>(c, [](const gemma3n::LayerConfig& l) {
          return static_cast<int32_t>(l.intermediate_size);
        }));
  w.add(a + "attention.head_count", static_cast<uint32_t>(c.num_heads));
  w.add(a + "attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  w.add(a + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add(a + "rope.freq_base_swa", static_cast<float>(c.rope_local_base_freq));
  w.add(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.add(a + "attention.key_length", static_cast<uint32_t>(c.head_dim));
  w.add(a + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  w.add("general.file_type", file_type_id(out));
  if (c.final_logit_softcapping)
    w.add(a + "final_logit_softcapping", static_cast<float>(*c.final_logit_softcapping));
  w.add(a + "attention.sliding_window", static_cast<uint32_t>(c.sliding_window));
  w.add(a + "altup.active_idx", static_cast<uint32_t>(c.altup_active_idx));
  w.add(a + "altup.num_inputs", static_cast<uint32_t>(c.altup_num_inputs));
  w.add(a + "altup.correct_scale", c.altup_correct_scale);  // Ollama's key; llama.cpp assumes true
  w.add(a + "embedding_length_per_layer_input", static_cast<uint32_t>(c.hidden_size_per_layer_input));
  w.add(a + "attention.shared_kv_layers", static_cast<uint32_t>(c.num_kv_shared_layers));
  w.add(a + "activation_sparsity_scale", per_layer<float>(c, [](const gemma3n::LayerConfig& l) {
          return static_cast<float>(l.sparsity_std_multiplier);
        }));
  w.add(a + "attention.sliding_window_pattern",
        per_layer<bool>(c, [](const gemma3n::LayerConfig& l) { return l.sliding; }));
  w.add("general.quantization_version", uint32_t{2});
}

// The token embedding and the per-layer embedding, both written with vocab_size rows: the per-layer
// table covers text ids only, and llama.cpp indexes both with any id, so the image and audio ids get
// zero rows (those tokens are embedded by the towers).
void plan_embeddings(const gemma3n::Config& c, const std::string& prefix, TensorPlan& plan) {
  const int64_t per_layer_width = c.num_layers * c.hidden_size_per_layer_input;
  plan.add("token_embd.weight", prefix + "embed_tokens.weight", {c.vocab_size, c.hidden_size});
  const Tensor& per_layer =
      plan.get(prefix + "embed_tokens_per_layer.weight", {c.vocab_size_per_layer_input, per_layer_width});
  plan.add(PlannedTensor{"per_layer_token_embd.weight",
                         {&per_layer},
                         plan.type_for(per_layer.shape),
                         {c.vocab_size, per_layer_width}});
  plan.add("per_layer_model_proj.weight", prefix + "per_layer_model_projection.weight",
           {per_layer_width, c.hidden_size});
  plan.add("per_layer_proj_norm.weight", prefix + "per_layer_projection_norm.weight",
           {c.hidden_size_per_layer_input});
}

// altup_projections.{0..n-2} (and the unembedding ones) stacked into one [n-1, hidden, hidden] tensor.
void plan_stacked(const gemma3n::Config& c, const Checkpoint& ckpt, const std::string& src_stem,
                  const std::string& gguf_name, TensorPlan& plan) {
  const auto part_name = [&](int64_t i) { return src_stem + "." + std::to_string(i) + ".weight"; };
  int64_t count = 0;
  while (plan.find(part_name(count))) ++count;
  if (count != c.altup_num_inputs - 1)
    fail((ckpt.dir / "config.json").string() + ": altup_num_inputs is " + std::to_string(c.altup_num_inputs) +
         " but the checkpoint has " + std::to_string(count) + " " + src_stem +
         " (altup_num_inputs - 1 expected)");
  std::vector<const Tensor*> parts;
  for (int64_t i = 0; i < count; ++i)
    parts.push_back(&plan.get(part_name(i), {c.hidden_size, c.hidden_size}));
  const std::vector<int64_t> shape = {count, c.hidden_size, c.hidden_size};
  plan.add(PlannedTensor{gguf_name, std::move(parts), plan.type_for(shape), shape});
}

void plan_attention(const gemma3n::Config& c, const std::string& src, const std::string& dst,
                    TensorPlan& plan) {
  const int64_t d = c.hidden_size, q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  plan.add(dst + "attn_norm.weight", src + "input_layernorm.weight", {d});
  // Every layer keeps its k/v projections, even those that reuse an earlier layer's cache: llama.cpp
  // requires them.
  plan.add(dst + "attn_q.weight", src + "self_attn.q_proj.weight", {q_dim, d});
  plan.add(dst + "attn_k.weight", src + "self_attn.k_proj.weight", {kv_dim, d});
  plan.add(dst + "attn_v.weight", src + "self_attn.v_proj.weight", {kv_dim, d});
  plan.add(dst + "attn_output.weight", src + "self_attn.o_proj.weight", {d, q_dim});
  plan.add(dst + "attn_q_norm.weight", src + "self_attn.q_norm.weight", {c.head_dim});
  plan.add(dst + "attn_k_norm.weight", src + "self_attn.k_norm.weight", {c.head_dim});
  plan.add(dst + "post_attention_norm.weight", src + "post_attention_layernorm.weight", {d});
}


// AltUp, LAuReL and the per-layer input of one layer.
void plan_layer_extras(const gemma3n::Config& c, const std::string& src, const std::string& dst,
                       TensorPlan& plan) {
  const int64_t d = c.hidden_size, n = c.altup_num_inputs, p = c.hidden_size_per_layer_input;
  plan.add(dst + "inp_gate.weight", src + "per_layer_input_gate.weight", {p, d});
  plan.add(dst + "proj.weight", src + "per_layer_projection.weight", {d, p});
  plan.add(dst + "post_norm.weight", src + "post_per_layer_input_norm.weight", {d});
  // transformers clamps the correction coefficients to altup_coef_clip before every use; storing them
  // clamped makes that a no-op for the runtime.
  PlannedTensor& correct =
      plan.add(dst + "altup_correct_coef.weight", src + "altup.correction_coefs.weight", {n, n});
  if (c.altup_coef_clip) correct.clip = static_cast<float>(*c.altup_coef_clip);
  plan.add(dst + "altup_correct_scale.weight", src + "altup.correct_output_scale", {d});
  plan.add(dst + "altup_predict_coef.weight", src + "altup.prediction_coefs.weight", {n * n, n});
  plan.add(dst + "altup_router.weight", src + "altup.modality_router.weight", {n, d});
  plan.add(dst + "altup_router_norm.weight", src + "altup.router_norm.weight", {d});
  plan.add(dst + "laurel_l.weight", src + "laurel.linear_left.weight", {c.laurel_rank, d});
  plan.add(dst + "laurel_r.weight", src + "laurel.linear_right.weight", {d, c.laurel_rank});
  plan.add(dst + "laurel_post_norm.weight", src + "laurel.post_laurel_norm.weight", {d});
}

}  // namespace

std::string convert_gemma3n(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                            TensorPlan& plan) {
  const gemma3n::Config c = gemma3n::resolve_config(ckpt.config, (ckpt.dir / "config.json").string());
  const std::string prefix = text_model_prefix(ckpt);

  add_general(w, kArch, ckpt.dir);
  add_hyperparameters(w, c, out_type);
  // One token per embedding row (vocab_size, text plus image and audio ids), as llama.cpp writes it.
  add_vocabulary(w, ckpt, c.vocab_size);

  plan_embeddings(c, prefix, plan);
  plan_stacked(c, ckpt, prefix + "altup_projections", "altup_proj.weight", plan);
  plan_stacked(c, ckpt, prefix + "altup_unembed_projections", "altup_unembd_proj.weight", plan);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string src = prefix + "layers." + std::to_string(l) + ".";
    const std::string dst = "blk." + std::to_string(l) + ".";
    plan_attention(c, src, dst, plan);
    plan_mlp(c.hidden_size, c.layers[l].intermediate_size, src, dst, plan);
    plan_layer_extras(c, src, dst, plan);
  }
  plan.add("output_norm.weight", prefix + "norm.weight", {c.hidden_size});
  plan.check_all_used(is_multimodal_tower_tensor,
                      "a gemma3n text model with " + std::to_string(c.num_layers) + " layers (config.json)");
  return kArch;
}

}  // namespace ge::convert
