#include "loader/gguf_model.h"

#include <deque>
#include <functional>
#include <cmath>
#include <map>
#include <stdexcept>
#include <vector>

namespace ge::loader {
namespace {

using formats::GgufFile;
using formats::GgufMetadata;
using gemma::Family;

[[noreturn]] void fail(const GgufFile& f, const std::string& what) {
  throw std::runtime_error(f.path().string() + ": " + what);
}

Family family_of(const GgufFile& f) {
  const std::string& arch = f.metadata().get_string("general.architecture");
  if (arch == "gemma") return Family::kGemma;
  if (arch == "gemma2") return Family::kGemma2;
  if (arch == "gemma3") return Family::kGemma3;
  fail(f, "general.architecture '" + arch + "' is not supported (gemma, gemma2, gemma3, gemma3n)");
}

int64_t positive(const GgufFile& f, const std::string& key, std::optional<uint32_t> fallback = std::nullopt) {
  const std::optional<uint32_t> v = f.metadata().find<uint32_t>(key);
  if (!v && !fallback) fail(f, "metadata key '" + key + "' is missing");
  const uint32_t n = v.value_or(fallback.value_or(0));
  if (n == 0) fail(f, "metadata key '" + key + "' must be positive");
  return n;
}

// llama.cpp's reading of `<arch>.attention.sliding_window_pattern` (llama_hparams::set_swa_pattern): layer
// l slides unless it is the last of its period; period 0 makes every layer slide, 1 none.
bool slides_in_period(uint32_t period, int64_t layer) {
  return period == 0 || layer % period < period - 1;
}

// Which layers slide: none without a window (llama.cpp's gemma3 reading); else the per-layer key `gemma
// convert` writes for a pattern no period describes; else the period, llama.cpp's key, defaulting as
// llama.cpp does to every 2nd layer global for Gemma 2 and every 6th for Gemma 3.
std::vector<bool> sliding_layers(const GgufFile& f, Family family, const std::string& a, int64_t n_layers) {
  const GgufMetadata& m = f.metadata();
  if (m.find<uint32_t>(a + "attention.sliding_window").value_or(0) == 0)
    return std::vector<bool>(n_layers, false);
  if (const auto layers = m.find<std::vector<bool>>(a + "attention.sliding_window_layers")) {
    if (static_cast<int64_t>(layers->size()) != n_layers)
      fail(f, "metadata key '" + a + "attention.sliding_window_layers' has " +
                  std::to_string(layers->size()) + " entries for " + std::to_string(n_layers) + " layers");
    return *layers;
  }
  const uint32_t period =
      m.find<uint32_t>(a + "attention.sliding_window_pattern").value_or(family == Family::kGemma2 ? 2 : 6);
  std::vector<bool> sliding(n_layers);
  for (int64_t l = 0; l < n_layers; ++l) sliding[l] = slides_in_period(period, l);
  return sliding;
}

// The key `gemma convert` writes, else llama.cpp's rule: the 27B models scale queries by (hidden /
// heads)^-0.5 instead of head_dim^-0.5, recognized by their layer count.
double query_pre_attn_scalar(const GgufFile& f, Family family, const std::string& a, const gemma::Config& c) {
  if (const auto scalar = f.metadata().find<float>(a + "attention.query_pre_attn_scalar")) {
    if (!(*scalar > 0)) fail(f, "metadata key '" + a + "attention.query_pre_attn_scalar' must be positive");
    return *scalar;
  }
  const bool is_27b =
      (family == Family::kGemma2 && c.num_layers == 46) || (family == Family::kGemma3 && c.num_layers == 62);
  return is_27b ? static_cast<double>(c.hidden_size / c.num_heads) : static_cast<double>(c.head_dim);
}

// GGUF name suffix within a block -> Hugging Face name suffix within a layer.
const std::map<std::string, std::string, std::less<>>& layer_names(Family family) {
  static const std::map<std::string, std::string, std::less<>> common = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"post_attention_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
      {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
  };
  // Gemma 1's only norm between attention and MLP is called post_attention_layernorm in its checkpoints.
  static const auto gemma1 = [] {
    auto m = common;
    m["ffn_norm.weight"] = "post_attention_layernorm.weight";
    return m;
  }();
  return family == Family::kGemma ? gemma1 : common;
}

std::string hf_name(const GgufFile& f, Family family, const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (name.starts_with("blk.")) {
    const size_t dot = name.find('.', 4);
    if (dot != std::string::npos) {
      const auto& names = layer_names(family);
      const auto it = names.find(std::string_view(name).substr(dot + 1));
      if (it != names.end()) return "model.layers." + name.substr(4, dot - 4) + "." + it->second;
    }
  }
  fail(f, "tensor '" + name + "' is not part of a " + f.metadata().get_string("general.architecture") +
              " text model");
}

// Gemma 3n: GGUF name suffix within a block -> Hugging Face name within a layer.
const std::map<std::string, std::string, std::less<>>& gemma3n_layer_names() {
  static const auto names = [] {
    auto m = layer_names(Family::kGemma3);
    m.insert({{"inp_gate.weight", "per_layer_input_gate.weight"},
              {"proj.weight", "per_layer_projection.weight"},
              {"post_norm.weight", "post_per_layer_input_norm.weight"},
              {"altup_correct_coef.weight", "altup.correction_coefs.weight"},
              {"altup_correct_scale.weight", "altup.correct_output_scale"},
              {"altup_predict_coef.weight", "altup.prediction_coefs.weight"},
              {"altup_router.weight", "altup.modality_router.weight"},
              {"altup_router_norm.weight", "altup.router_norm.weight"},
              {"laurel_l.weight", "laurel.linear_left.weight"},
              {"laurel_r.weight", "laurel.linear_right.weight"},
              {"laurel_post_norm.weight", "laurel.post_laurel_norm.weight"}});
    return m;
  }();
  return names;
}

// One GGUF tensor of a gemma3n file as the Hugging Face tensors it holds.
std::vector<std::pair<std::string, Tensor>> gemma3n_views(const GgufFile& f, const Tensor& t) {
  static const std::map<std::string, std::string, std::less<>> top = {
      {"token_embd.weight", "embed_tokens.weight"},
      {"per_layer_token_embd.weight", "embed_tokens_per_layer.weight"},
      {"per_layer_model_proj.weight", "per_layer_model_projection.weight"},
      {"per_layer_proj_norm.weight", "per_layer_projection_norm.weight"},
      {"output_norm.weight", "norm.weight"}};
  const std::string prefix = "model.";
  const auto renamed = [&](const std::string& name) { return std::vector{std::pair{prefix + name, t}}; };
  if (const auto it = top.find(t.name); it != top.end()) return renamed(it->second);
  for (const auto& [stacked, stem] : {std::pair{"altup_proj.weight", "altup_projections."},
                                      std::pair{"altup_unembd_proj.weight", "altup_unembed_projections."}}) {
    if (t.name != stacked) continue;
    if (t.shape.size() != 3) fail(f, "tensor '" + t.name + "' must be [n - 1, hidden, hidden]");
    std::vector<std::pair<std::string, Tensor>> parts;
    const size_t part_bytes = t.nbytes / static_cast<size_t>(t.shape[0]);
    for (int64_t i = 0; i < t.shape[0]; ++i) {
      Tensor v = t;
      v.name = t.name + "[" + std::to_string(i) + "]";
      v.shape = {t.shape[1], t.shape[2]};
      v.data = t.data + i * part_bytes;
      v.nbytes = part_bytes;
      parts.emplace_back(prefix + stem + std::to_string(i) + ".weight", std::move(v));
    }
    return parts;
  }
  if (t.name.starts_with("blk.")) {
    const size_t dot = t.name.find('.', 4);
    if (dot != std::string::npos) {
      const auto it = gemma3n_layer_names().find(std::string_view(t.name).substr(dot + 1));
      if (it != gemma3n_layer_names().end()) return renamed("layers." + t.name.substr(4, dot - 4) + "." + it->second);
    }
  }
  fail(f, "tensor '" + t.name + "' is not part of a gemma3n text model");
}

// A GGUF file's tensors under the names a model binds: views of its tensors (one per file tensor, or the
// parts of a stacked one), kept at stable addresses.
class RenamedTensors final : public TensorSource {
 public:
  RenamedTensors(std::unique_ptr<GgufFile> file, const TensorViews& views_of) : file_(std::move(file)) {
    for (const Tensor* t : file_->all())
      for (auto& [name, view] : views_of(*t)) {
        views_.push_back(std::move(view));
        by_hf_name_[name] = &views_.back();
      }
  }
  const Tensor* find(std::string_view name) const override {
    const auto it = by_hf_name_.find(name);
    return it == by_hf_name_.end() ? nullptr : it->second;
  }
  std::vector<const Tensor*> all() const override { return file_->all(); }
  std::string describe() const override { return file_->describe(); }

 private:
  std::unique_ptr<GgufFile> file_;
  std::deque<Tensor> views_;
  std::map<std::string, const Tensor*, std::less<>> by_hf_name_;
};

int32_t token_id(const GgufMetadata& m, const std::string& key) {
  const auto v = m.find<uint32_t>(key);
  return v ? static_cast<int32_t>(*v) : -1;
}

}  // namespace

gemma::Config config_from_gguf(const GgufFile& f) {
  const Family family = family_of(f);
  const GgufMetadata& m = f.metadata();
  const std::string a = m.get_string("general.architecture") + ".";
  gemma::Config c;
  c.family = family;
  c.norm_adds_one = false;
  const Tensor* embed = f.find("token_embd.weight");
  if (!embed || embed->shape.size() != 2) fail(f, "tensor 'token_embd.weight' is missing or not a matrix");
  c.vocab_size = embed->shape[0];
  c.hidden_size = positive(f, a + "embedding_length");
  c.intermediate_size = positive(f, a + "feed_forward_length");
  c.num_layers = positive(f, a + "block_count");
  c.num_heads = positive(f, a + "attention.head_count");
  c.num_kv_heads = positive(f, a + "attention.head_count_kv", static_cast<uint32_t>(c.num_heads));
  c.head_dim = positive(f, a + "attention.key_length", static_cast<uint32_t>(c.hidden_size / c.num_heads));
  c.max_position_embeddings = positive(f, a + "context_length");
  c.rms_norm_eps = m.get_f32(a + "attention.layer_norm_rms_epsilon");
  if (c.num_heads % c.num_kv_heads != 0) fail(f, a + "attention.head_count_kv must divide the head count");
  if (c.head_dim % 2 != 0) fail(f, a + "attention.key_length must be even for RoPE");
  c.query_pre_attn_scalar = query_pre_attn_scalar(f, family, a, c);
  if (const auto cap = m.find<float>(a + "attn_logit_softcapping"); cap && family == Family::kGemma2)
    c.attn_logit_softcapping = *cap;
  if (const auto cap = m.find<float>(a + "final_logit_softcapping"); cap && family != Family::kGemma)
    c.final_logit_softcapping = *cap;
  c.sliding_window = m.find<uint32_t>(a + "attention.sliding_window").value_or(0);
  c.tie_word_embeddings = f.find("output.weight") == nullptr;

  const double base = m.find<float>(a + "rope.freq_base").value_or(10000.0f);
  double scale = 1;
  if (m.find<std::string>(a + "rope.scaling.type").value_or("none") == "linear")
    scale = m.get_f32(a + "rope.scaling.factor");
  // Gemma 3's sliding layers have their own base and no scaling.
  const bool own_local = family == Family::kGemma3;
  const double local_base = own_local ? m.find<float>(a + "rope.freq_base_swa").value_or(10000.0f) : base;
  const double local_scale = own_local ? 1.0 : scale;
  for (bool sliding : sliding_layers(f, family, a, c.num_layers))
    c.layers.push_back(sliding ? gemma::LayerConfig{true, local_base, local_scale}
                               : gemma::LayerConfig{false, base, scale});
  return c;
}

std::unique_ptr<TensorSource> tensor_views(std::unique_ptr<GgufFile> file, const TensorViews& views_of) {
  return std::make_unique<RenamedTensors>(std::move(file), views_of);
}

std::unique_ptr<TensorSource> renamed_tensors(std::unique_ptr<GgufFile> file,
                                              const std::function<std::string(const std::string&)>& name_of) {
  return tensor_views(std::move(file), [&](const Tensor& t) { return std::vector{std::pair{name_of(t.name), t}}; });
}

std::unique_ptr<TensorSource> hf_named_tensors(std::unique_ptr<GgufFile> file, Family family) {
  const GgufFile& f = *file;
  return renamed_tensors(std::move(file), [&](const std::string& name) { return hf_name(f, family, name); });
}

gemma3n::Config gemma3n_config_from_gguf(const GgufFile& f) {
  const GgufMetadata& m = f.metadata();
  const std::string a = "gemma3n.";
  gemma3n::Config c;
  const Tensor* embed = f.find("token_embd.weight");
  const Tensor* per_layer = f.find("per_layer_token_embd.weight");
  const Tensor* laurel = f.find("blk.0.laurel_l.weight");
  for (const auto& [t, name] : {std::pair{embed, "token_embd.weight"}, std::pair{per_layer, "per_layer_token_embd.weight"},
                                std::pair{laurel, "blk.0.laurel_l.weight"}})
    if (!t || t->shape.size() != 2) fail(f, std::string("tensor '") + name + "' is missing or not a matrix");
  c.vocab_size = embed->shape[0];
  c.vocab_size_per_layer_input = per_layer->shape[0];
  c.laurel_rank = laurel->shape[0];
  c.hidden_size = positive(f, a + "embedding_length");
  c.hidden_size_per_layer_input = positive(f, a + "embedding_length_per_layer_input");
  c.num_layers = positive(f, a + "block_count");
  c.num_heads = positive(f, a + "attention.head_count");
  c.num_kv_heads = positive(f, a + "attention.head_count_kv", static_cast<uint32_t>(c.num_heads));
  c.head_dim = positive(f, a + "attention.key_length");
  c.max_position_embeddings = positive(f, a + "context_length");
  c.rms_norm_eps = m.get_f32(a + "attention.layer_norm_rms_epsilon");
  c.sliding_window = positive(f, a + "attention.sliding_window");
  c.rope_theta = m.find<float>(a + "rope.freq_base").value_or(1000000.0f);
  c.rope_local_base_freq = m.find<float>(a + "rope.freq_base_swa").value_or(10000.0f);
  if (const auto cap = m.find<float>(a + "final_logit_softcapping")) c.final_logit_softcapping = *cap;
  c.altup_num_inputs = positive(f, a + "altup.num_inputs");
  c.altup_active_idx = m.find<uint32_t>(a + "altup.active_idx").value_or(0);
  c.altup_correct_scale = m.find<bool>(a + "altup.correct_scale").value_or(true);
  c.num_kv_shared_layers = m.find<uint32_t>(a + "attention.shared_kv_layers").value_or(0);
  if (c.num_heads % c.num_kv_heads != 0) fail(f, a + "attention.head_count_kv must divide the head count");
  if (c.altup_active_idx >= c.altup_num_inputs) fail(f, a + "altup.active_idx must be below altup.num_inputs");
  if (c.num_kv_shared_layers >= c.num_layers)
    fail(f, a + "attention.shared_kv_layers must leave a layer computing its own keys and values");
  const auto& widths = m.get_array<int32_t>(a + "feed_forward_length");
  const auto& sparsity = m.get_array<float>(a + "activation_sparsity_scale");
  const auto& sliding = m.get_array<bool>(a + "attention.sliding_window_pattern");
  for (const auto& [size, key] : {std::pair{widths.size(), "feed_forward_length"},
                                  std::pair{sparsity.size(), "activation_sparsity_scale"},
                                  std::pair{sliding.size(), "attention.sliding_window_pattern"}})
    if (static_cast<int64_t>(size) != c.num_layers)
      fail(f, "metadata key '" + a + key + "' has " + std::to_string(size) + " entries for " +
                  std::to_string(c.num_layers) + " layers");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (widths[l] <= 0) fail(f, "metadata key '" + a + "feed_forward_length' must be positive");
    // The file keeps the quantile (0 for a dense layer); the sparsity itself is its normal CDF.
    const double multiplier = sparsity[l];
    const double p = multiplier != 0 ? 0.5 * std::erfc(-multiplier / std::sqrt(2.0)) : 0.0;
    c.layers.push_back({static_cast<bool>(sliding[l]), widths[l], p, multiplier});
  }
  return c;
}

std::unique_ptr<TensorSource> gemma3n_hf_named_tensors(std::unique_ptr<GgufFile> file) {
  const GgufFile& f = *file;
  return tensor_views(std::move(file), [&](const Tensor& t) { return gemma3n_views(f, t); });
}

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  const GgufMetadata& m = f.metadata();
  const std::string& model = m.get_string("tokenizer.ggml.model");
  if (model != "llama")
    fail(f, "tokenizer.ggml.model '" + model + "' is not supported (Gemma files use 'llama')");
  VocabularyData v;
  v.tokens = m.get_array<std::string>("tokenizer.ggml.tokens");
  v.scores = m.get_array<float>("tokenizer.ggml.scores");
  v.types = m.get_array<int32_t>("tokenizer.ggml.token_type");
  v.bos_id = token_id(m, "tokenizer.ggml.bos_token_id");
  v.eos_id = token_id(m, "tokenizer.ggml.eos_token_id");
  v.unk_id = token_id(m, "tokenizer.ggml.unknown_token_id");
  v.pad_id = token_id(m, "tokenizer.ggml.padding_token_id");
  v.add_bos = m.find<bool>("tokenizer.ggml.add_bos_token").value_or(true);
  return Tokenizer::from_vocabulary(v, f.path().string());
}

std::vector<int32_t> end_of_generation_ids(const GgufFile& f, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = {tokenizer.eos_id()};
  const int32_t eot = token_id(f.metadata(), "tokenizer.ggml.eot_token_id");
  if (eot >= 0 && eot != ids[0] && eot < tokenizer.size()) ids.push_back(eot);
  return ids;
}

}  // namespace ge::loader
