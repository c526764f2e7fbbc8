// Gemma 1, 2 and 3 text checkpoints -> GGUF (arch "gemma", "gemma2", "gemma3"), following llama.cpp's
// converter (GemmaModel, Gemma2Model, Gemma3Model) and Ollama's (the FIM/EOT ids): metadata keys, tensor
// names, every norm stored as w + 1 (Gemma's RMSNorm multiplies by 1 + w, GGUF runtimes by w), and the
// embedding table cut to the vocabulary; plus keys of ours for what llama.cpp has no key for (see
// add_layer_pattern_and_scale). The hyperparameters come from the model's own config resolution
// (models/gemma/config: transformers' defaults per family), not the forward pass.
#include <algorithm>
#include <optional>
#include <vector>

#include "convert/conversion.h"
#include "convert/vocab.h"
#include "models/gemma/config.h"

namespace ge::convert {
namespace {

using gemma::Family;

// Where the text model's tensors live in the checkpoint.
struct Names {
  std::string prefix = "model.";
  std::string lm_head = "lm_head.weight";
};

Names tensor_names(const Checkpoint& ckpt) {
  Names n;
  if (ckpt.config.value("model_type", std::string()) != "gemma3") return n;
  if (ckpt.tensors.find("model.language_model.embed_tokens.weight")) {
    n.prefix = "model.language_model.";
  } else {
    n.prefix = "language_model.model.";
    n.lm_head = "language_model.lm_head.weight";
  }
  return n;
}

bool is_vision_tensor(std::string_view name) {
  for (std::string_view p :
       {"vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."})
    if (name.starts_with(p)) return true;
  return false;
}

const gemma::LayerConfig* first_layer(const gemma::Config& c, bool sliding) {
  const auto it = std::find_if(c.layers.begin(), c.layers.end(),
                               [sliding](const gemma::LayerConfig& l) { return l.sliding == sliding; });
  return it == c.layers.end() ? nullptr : &*it;
}

// llama.cpp's reading of `<arch>.attention.sliding_window_pattern` (llama_hparams::set_swa_pattern): layer
// l slides unless it is the last of its period; period 0 makes every layer slide, 1 none.
bool slides_in_period(uint32_t period, size_t layer) {
  return period == 0 || layer % period < period - 1;
}

// The period that gives exactly these layers under llama.cpp's rule (0 when all slide), or nullopt for a
// pattern no period describes (layer_types such as sliding, full, sliding, sliding, full).
std::optional<uint32_t> sliding_period(const std::vector<bool>& sliding) {
  const auto gives = [&](uint32_t period) {
    for (size_t l = 0; l < sliding.size(); ++l)
      if (sliding[l] != slides_in_period(period, l)) return false;
    return true;
  };
  for (uint32_t period = 0; period <= sliding.size(); ++period)
    if (gives(period)) return period;
  return std::nullopt;
}

// Which layers slide, and the attention scale, for llama.cpp and for our loader. llama.cpp's gemma2 and
// gemma3 loaders read the period (defaulting to 2 and 6), so a periodic pattern is written as one; a
// pattern no period describes cannot reach llama.cpp (it applies its default), and goes in a key of ours
// instead. llama.cpp has no key for query_pre_attn_scalar (it derives head_dim, or hidden/heads for the 27B
// layer counts), so that too is a key of ours. Our keys, which llama.cpp ignores and loader/gguf_model
// reads:
//   <arch>.attention.query_pre_attn_scalar  FLOAT32: queries are scaled by its inverse square root.
//   <arch>.attention.sliding_window_layers  ARRAY of BOOL, one per layer, true where the layer attends
//                                           through the sliding window; only where no period fits.
void add_layer_pattern_and_scale(formats::GgufWriter& w, const std::string& a, const gemma::Config& c) {
  w.add(a + "attention.query_pre_attn_scalar", static_cast<float>(c.query_pre_attn_scalar));
  std::vector<bool> sliding;
  for (const gemma::LayerConfig& l : c.layers) sliding.push_back(l.sliding);
  if (const auto period = sliding_period(sliding))
    w.add(a + "attention.sliding_window_pattern", *period);
  else
    w.add(a + "attention.sliding_window_layers", sliding);
}

void add_hyperparameters(formats::GgufWriter& w, const std::string& arch, const gemma::Config& c,
                         OutType out) {
  const std::string a = arch + ".";
  const gemma::LayerConfig* global = first_layer(c, false);
  const gemma::LayerConfig* local = first_layer(c, true);
  w.add(a + "context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add(a + "embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.add(a + "block_count", static_cast<uint32_t>(c.num_layers));
  w.add(a + "feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.add(a + "attention.head_count", static_cast<uint32_t>(c.num_heads));
  w.add(a + "attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  if (global && global->rope_scale != 1) {
    w.add(a + "rope.scaling.type", std::string("linear"));
    w.add(a + "rope.scaling.factor", static_cast<float>(global->rope_scale));
  }
  w.add(a + "rope.freq_base", static_cast<float>((global ? global : local)->rope_base));
  if (c.family == Family::kGemma3 && local)
    w.add(a + "rope.freq_base_swa", static_cast<float>(local->rope_base));
  w.add(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.add(a + "attention.key_length", static_cast<uint32_t>(c.head_dim));
  w.add(a + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  w.add("general.file_type", file_type_id(out));
  if (c.attn_logit_softcapping)
    w.add(a + "attn_logit_softcapping", static_cast<float>(*c.attn_logit_softcapping));
  if (c.final_logit_softcapping)
    w.add(a + "final_logit_softcapping", static_cast<float>(*c.final_logit_softcapping));
  // Gemma 2 always slides; llama.cpp leaves the window out of a Gemma 3 whose layers are all global.
  if (local) w.add(a + "attention.sliding_window", static_cast<uint32_t>(c.sliding_window));
  // Gemma 1 has neither: no sliding layers, and it scales by head_dim as llama.cpp does.
  if (c.family != Family::kGemma) add_layer_pattern_and_scale(w, a, c);
  w.add("general.quantization_version", uint32_t{2});
}

// Gemma 1 and 2: the code-completion and end-of-turn ids, constants whatever the vocabulary (Ollama writes
// them for both families, llama.cpp for Gemma 1 together with the file separator).
void add_fim_tokens(formats::GgufWriter& w, Family family) {
  w.add("tokenizer.ggml.prefix_token_id", uint32_t{67});
  w.add("tokenizer.ggml.suffix_token_id", uint32_t{69});
  w.add("tokenizer.ggml.middle_token_id", uint32_t{68});
  if (family == Family::kGemma) w.add("tokenizer.ggml.fsep_token_id", uint32_t{70});
  w.add("tokenizer.ggml.eot_token_id", uint32_t{107});
}

void plan_layers(const gemma::Config& c, const Names& n, TensorPlan& plan) {
  const int64_t d = c.hidden_size, q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const auto norm = [&](std::string gguf, const std::string& src, int64_t size) {
    plan.add(std::move(gguf), src, {size}).add = 1.0f;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string src = n.prefix + "layers." + std::to_string(l) + ".";
    const std::string dst = "blk." + std::to_string(l) + ".";
    norm(dst + "attn_norm.weight", src + "input_layernorm.weight", d);
    plan.add(dst + "attn_q.weight", src + "self_attn.q_proj.weight", {q_dim, d});
    plan.add(dst + "attn_k.weight", src + "self_attn.k_proj.weight", {kv_dim, d});
    plan.add(dst + "attn_v.weight", src + "self_attn.v_proj.weight", {kv_dim, d});
    plan.add(dst + "attn_output.weight", src + "self_attn.o_proj.weight", {d, q_dim});
    if (c.qk_norm()) {
      norm(dst + "attn_q_norm.weight", src + "self_attn.q_norm.weight", c.head_dim);
      norm(dst + "attn_k_norm.weight", src + "self_attn.k_norm.weight", c.head_dim);
    }
    if (c.sandwich_norms()) {
      norm(dst + "post_attention_norm.weight", src + "post_attention_layernorm.weight", d);
      norm(dst + "ffn_norm.weight", src + "pre_feedforward_layernorm.weight", d);
    } else {
      // Gemma 1's post_attention_layernorm is the MLP's input norm.
      norm(dst + "ffn_norm.weight", src + "post_attention_layernorm.weight", d);
    }
    plan.add(dst + "ffn_gate.weight", src + "mlp.gate_proj.weight", {c.intermediate_size, d});
    plan.add(dst + "ffn_up.weight", src + "mlp.up_proj.weight", {c.intermediate_size, d});
    plan.add(dst + "ffn_down.weight", src + "mlp.down_proj.weight", {d, c.intermediate_size});
    if (c.sandwich_norms()) norm(dst + "post_ffw_norm.weight", src + "post_feedforward_layernorm.weight", d);
  }
  norm("output_norm.weight", n.prefix + "norm.weight", d);
}

}  // namespace

std::string convert_gemma_text(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                               TensorPlan& plan) {
  const gemma::Config c = gemma::resolve_config(ckpt.config, (ckpt.dir / "config.json").string());
  const std::string arch = c.family_name();
  const Names names = tensor_names(ckpt);

  add_general(w, arch, ckpt.dir);
  add_hyperparameters(w, arch, c, out_type);
  const auto n_vocab = static_cast<int64_t>(add_vocabulary(w, ckpt, c.vocab_size).size());
  if (c.family != Family::kGemma3) add_fim_tokens(w, c.family);

  // The embedding table is cut to the vocabulary (llama.cpp drops rows past it).
  const std::string embed_name = names.prefix + "embed_tokens.weight";
  const Tensor& embed = plan.get(embed_name, {c.vocab_size, c.hidden_size});
  plan.add(
      PlannedTensor{"token_embd.weight", {&embed}, plan.type_for(embed.shape), {n_vocab, c.hidden_size}});
  plan_layers(c, names, plan);
  // llama.cpp drops a Gemma 1/2 lm_head (it is the embedding table) and keeps an untied Gemma 3 one.
  if (plan.find(names.lm_head)) {
    const Tensor& head = plan.get(names.lm_head, {c.vocab_size, c.hidden_size});
    if (c.family == Family::kGemma3)
      plan.add(PlannedTensor{"output.weight", {&head}, plan.type_for(head.shape), {n_vocab, c.hidden_size}});
  }
  // The vision part of a gemma3 checkpoint goes to the mmproj file, not the text GGUF.
  plan.check_all_used(is_vision_tensor, std::string("a ") + arch + " text model with " +
                                            std::to_string(c.num_layers) + " layers (config.json)");
  return arch;
}

}  // namespace ge::convert
