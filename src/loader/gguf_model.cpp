#include "loader/gguf_model.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <vector>

#include "models/limits.h"

namespace ge::loader {
namespace {

using formats::GgufFile;
using formats::GgufMetadata;
using formats::GgufValue;
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

// Positive and within models/limits.h (block_count within kMaxLayers).
int64_t positive(const GgufFile& f, const std::string& key, std::optional<uint32_t> fallback = std::nullopt) {
  const std::optional<uint32_t> v = f.metadata().find<uint32_t>(key);
  if (!v && !fallback) fail(f, "metadata key '" + key + "' is missing");
  const int64_t n = v.value_or(fallback.value_or(0));
  if (n == 0) fail(f, "metadata key '" + key + "' must be positive");
  const int64_t max = key.ends_with(".block_count") ? models::kMaxLayers : models::kMaxConfigValue;
  if (n > max)
    fail(f, "metadata key '" + key + "': " + std::to_string(n) + " is more than the " + std::to_string(max) +
                " this engine takes");
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

using NameMap = std::map<std::string, std::string, std::less<>>;

// GGUF name suffix within a block -> Hugging Face name suffix within a layer.
const NameMap& layer_names(Family family) {
  static const NameMap common = {
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

// "blk.N.<suffix>" -> "layers.N.<HF suffix>", for the suffixes `names` holds.
std::optional<std::string> layer_tensor_name(const std::string& name, const NameMap& names) {
  if (!name.starts_with("blk.")) return std::nullopt;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return std::nullopt;
  const auto it = names.find(std::string_view(name).substr(dot + 1));
  if (it == names.end()) return std::nullopt;
  return "layers." + name.substr(4, dot - 4) + "." + it->second;
}

std::string hf_name(const GgufFile& f, Family family, const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (const auto layer = layer_tensor_name(name, layer_names(family))) return "model." + *layer;
  fail(f, "tensor '" + name + "' is not part of a " + f.metadata().get_string("general.architecture") +
              " text model");
}

// The per-layer-input families' tensors outside the blocks (Gemma 3n, 4).
const NameMap& per_layer_input_top_names() {
  static const NameMap names = {{"token_embd.weight", "embed_tokens.weight"},
                                {"per_layer_token_embd.weight", "embed_tokens_per_layer.weight"},
                                {"per_layer_model_proj.weight", "per_layer_model_projection.weight"},
                                {"per_layer_proj_norm.weight", "per_layer_projection_norm.weight"},
                                {"output_norm.weight", "norm.weight"}};
  return names;
}

NameMap with_per_layer_gate(NameMap m) {
  m.insert({{"inp_gate.weight", "per_layer_input_gate.weight"},
            {"proj.weight", "per_layer_projection.weight"},
            {"post_norm.weight", "post_per_layer_input_norm.weight"}});
  return m;
}

// The tensor under its Hugging Face name in Gemma3nForCausalLM / Gemma4ForCausalLM ("model.").
std::vector<std::pair<std::string, Tensor>> renamed_view(const GgufFile& f, const Tensor& t, const NameMap& layer) {
  std::optional<std::string> name;
  if (const auto it = per_layer_input_top_names().find(t.name); it != per_layer_input_top_names().end())
    name = it->second;
  else
    name = layer_tensor_name(t.name, layer);
  if (!name)
    fail(f, "tensor '" + t.name + "' is not part of a " + f.metadata().get_string("general.architecture") +
                " text model");
  return {{"model." + *name, t}};
}

// One GGUF tensor of a gemma3n file as the Hugging Face tensors it holds.
std::vector<std::pair<std::string, Tensor>> gemma3n_views(const GgufFile& f, const Tensor& t) {
  static const NameMap layer = [] {
    NameMap m = with_per_layer_gate(layer_names(Family::kGemma3));
    m.insert({{"altup_correct_coef.weight", "altup.correction_coefs.weight"},
              {"altup_correct_scale.weight", "altup.correct_output_scale"},
              {"altup_predict_coef.weight", "altup.prediction_coefs.weight"},
              {"altup_router.weight", "altup.modality_router.weight"},
              {"altup_router_norm.weight", "altup.router_norm.weight"},
              {"laurel_l.weight", "laurel.linear_left.weight"},
              {"laurel_r.weight", "laurel.linear_right.weight"},
              {"laurel_post_norm.weight", "laurel.post_laurel_norm.weight"}});
    return m;
  }();
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
      parts.emplace_back("model." + std::string(stem) + std::to_string(i) + ".weight", std::move(v));
    }
    return parts;
  }
  return renamed_view(f, t, layer);
}

// One GGUF tensor of a gemma4 file: renamed (the stacked experts are stacked alike in the checkpoint), or
// nothing for rope_freqs, which the config reads.
std::vector<std::pair<std::string, Tensor>> gemma4_views(const GgufFile& f, const Tensor& t) {
  static const NameMap layer = [] {
    NameMap m = with_per_layer_gate(layer_names(Family::kGemma3));
    m.insert({{"layer_output_scale.weight", "layer_scalar"},
              {"ffn_gate_inp.weight", "router.proj.weight"},
              {"ffn_gate_inp.scale", "router.scale"},
              {"ffn_gate_up_exps.weight", "experts.gate_up_proj"},
              {"ffn_down_exps.weight", "experts.down_proj"},
              {"ffn_down_exps.scale", "router.per_expert_scale"},
              {"pre_ffw_norm_2.weight", "pre_feedforward_layernorm_2.weight"},
              {"post_ffw_norm_1.weight", "post_feedforward_layernorm_1.weight"},
              {"post_ffw_norm_2.weight", "post_feedforward_layernorm_2.weight"}});
    return m;
  }();
  if (t.name == "rope_freqs.weight") return {};
  if (t.name.ends_with("ffn_gate_exps.weight") || t.name.ends_with("ffn_up_exps.weight"))
    fail(f, "tensor '" + t.name + "': experts with separate gate and up matrices are not supported (llama.cpp's "
                                  "converter and gemma convert write them fused, as ffn_gate_up_exps)");
  return renamed_view(f, t, layer);
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
  void release(const std::byte* data, size_t n) const override { file_->release(data, n); }

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

namespace {

// A per-layer count: one number for every layer, or a list with one per layer (gguf-py writes lists as INT32).
std::vector<int64_t> per_layer_counts(const GgufFile& f, const std::string& key, int64_t n_layers) {
  const GgufValue* value = f.metadata().value(key);
  if (!value) fail(f, "metadata key '" + key + "' is missing");
  std::vector<int64_t> counts;
  if (const auto* n = std::get_if<uint32_t>(value)) counts.assign(n_layers, *n);
  else if (const auto* n = std::get_if<int32_t>(value)) counts.assign(n_layers, *n);
  else if (const auto* list = std::get_if<std::vector<int32_t>>(value)) counts.assign(list->begin(), list->end());
  else if (const auto* list = std::get_if<std::vector<uint32_t>>(value)) counts.assign(list->begin(), list->end());
  else fail(f, "metadata key '" + key + "' is " + formats::gguf_type_name(*value) + ", not a count or a list of counts");
  if (static_cast<int64_t>(counts.size()) != n_layers)
    fail(f, "metadata key '" + key + "' has " + std::to_string(counts.size()) + " entries for " +
                std::to_string(n_layers) + " layers");
  for (int64_t n : counts)
    if (n <= 0) fail(f, "metadata key '" + key + "' must be positive");
  return counts;
}

// llama.cpp's proportional RoPE: rope_freqs holds one factor per pair, the same for the rotated pairs, and
// 1e30 (or more) for the pairs it leaves unrotated. No tensor: every pair turns, unscaled.
gemma4::Rope full_layer_rope(const GgufFile& f, double theta, int64_t head_dim) {
  gemma4::Rope rope{theta, 1.0, head_dim / 2};
  const Tensor* t = f.find("rope_freqs.weight");
  if (!t) return rope;
  if (t->dtype != DType::F32 || t->shape != std::vector<int64_t>{head_dim / 2})
    fail(f, "tensor 'rope_freqs.weight' must be F32 [" + std::to_string(head_dim / 2) + "] (key_length / 2)");
  std::vector<float> factors(static_cast<size_t>(head_dim / 2));
  std::memcpy(factors.data(), t->data, factors.size() * sizeof(float));
  constexpr float kUnrotated = 1e29f;
  const auto first_unrotated = std::find_if(factors.begin(), factors.end(), [](float x) { return x >= kUnrotated; });
  rope.rotated_pairs = first_unrotated - factors.begin();
  rope.factor = factors.empty() ? 1.0 : factors[0];
  const bool proportional =
      std::all_of(factors.begin(), first_unrotated, [&](float x) { return x == factors[0] && x > 0; }) &&
      std::all_of(first_unrotated, factors.end(), [](float x) { return x >= kUnrotated; });
  if (!proportional)
    fail(f, "tensor 'rope_freqs.weight': only proportional RoPE (one factor, then 1e30 for unrotated pairs) is "
            "supported for gemma4");
  return rope;
}

}  // namespace

gemma4::Config gemma4_config_from_gguf(const GgufFile& f, const Tokenizer& tokenizer) {
  const GgufMetadata& m = f.metadata();
  const std::string a = "gemma4.";
  gemma4::Config c;
  const Tensor* embed = f.find("token_embd.weight");
  if (!embed || embed->shape.size() != 2) fail(f, "tensor 'token_embd.weight' is missing or not a matrix");
  c.vocab_size = embed->shape[0];
  c.hidden_size = positive(f, a + "embedding_length");
  c.num_layers = positive(f, a + "block_count");
  c.num_heads = positive(f, a + "attention.head_count");
  c.max_position_embeddings = positive(f, a + "context_length");
  c.rms_norm_eps = m.get_f32(a + "attention.layer_norm_rms_epsilon");
  c.sliding_window = positive(f, a + "attention.sliding_window");
  if (const auto cap = m.find<float>(a + "final_logit_softcapping")) c.final_logit_softcapping = *cap;
  c.hidden_size_per_layer_input = m.find<uint32_t>(a + "embedding_length_per_layer_input").value_or(0);
  if (c.hidden_size_per_layer_input > 0) {
    const Tensor* table = f.find("per_layer_token_embd.weight");
    if (!table || table->shape.size() != 2) fail(f, "tensor 'per_layer_token_embd.weight' is missing or not a matrix");
    c.vocab_size_per_layer_input = table->shape[0];
  }
  c.num_kv_shared_layers = m.find<uint32_t>(a + "attention.shared_kv_layers").value_or(0);
  if (c.num_kv_shared_layers >= c.num_layers)
    fail(f, a + "attention.shared_kv_layers must leave a layer computing its own keys and values");
  c.enable_moe_block = f.find("blk.0.ffn_gate_inp.weight") != nullptr;
  if (c.enable_moe_block) {
    c.num_experts = positive(f, a + "expert_count");
    c.top_k_experts = positive(f, a + "expert_used_count");
    c.moe_intermediate_size = positive(f, a + "expert_feed_forward_length");
    if (c.top_k_experts > c.num_experts) fail(f, a + "expert_used_count must not exceed expert_count");
  }
  c.pad_token_id = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : 0;
  for (const char* placeholder : {"<|image|>", "<|video|>", "<|audio|>"})
    if (const auto id = tokenizer.find(placeholder)) c.placeholder_ids.push_back(*id);

  const auto& sliding = m.get_array<bool>(a + "attention.sliding_window_pattern");
  if (static_cast<int64_t>(sliding.size()) != c.num_layers)
    fail(f, "metadata key '" + a + "attention.sliding_window_pattern' has " + std::to_string(sliding.size()) +
                " entries for " + std::to_string(c.num_layers) + " layers");
  const int64_t full_dim = positive(f, a + "attention.key_length");
  const int64_t sliding_dim = positive(f, a + "attention.key_length_swa");
  for (const auto& [key, dim] : {std::pair{"attention.value_length", full_dim}, std::pair{"rope.dimension_count", full_dim},
                                 std::pair{"attention.value_length_swa", sliding_dim},
                                 std::pair{"rope.dimension_count_swa", sliding_dim}})
    if (m.find<uint32_t>(a + key).value_or(static_cast<uint32_t>(dim)) != dim)
      fail(f, "metadata key '" + a + key + "' must equal the matching key_length (Gemma 4 rotates whole heads)");
  const auto kv_heads = per_layer_counts(f, a + "attention.head_count_kv", c.num_layers);
  const auto widths = per_layer_counts(f, a + "feed_forward_length", c.num_layers);
  const gemma4::Rope sliding_rope{m.find<float>(a + "rope.freq_base_swa").value_or(10000.0f), 1.0, sliding_dim / 2};
  const gemma4::Rope full_rope = full_layer_rope(f, m.find<float>(a + "rope.freq_base").value_or(1e6f), full_dim);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    gemma4::LayerConfig lc;
    lc.sliding = sliding[l];
    lc.head_dim = lc.sliding ? sliding_dim : full_dim;
    lc.num_kv_heads = kv_heads[l];
    if (c.num_heads % lc.num_kv_heads != 0) fail(f, a + "attention.head_count_kv must divide the head count");
    lc.intermediate_size = widths[l];
    lc.rope = lc.sliding ? sliding_rope : full_rope;
    c.layers.push_back(lc);
  }
  // Values are the raw keys on full layers without attn_v (llama.cpp's rule); a KV-shared layer reads a
  // cache its source layer wrote, so it follows that layer.
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const int64_t source = c.kv_source(l);
    c.layers[l].k_eq_v = !c.layers[source].sliding && !f.find("blk." + std::to_string(source) + ".attn_v.weight");
  }
  return c;
}

std::unique_ptr<TensorSource> gemma4_hf_named_tensors(std::unique_ptr<GgufFile> file) {
  const GgufFile& f = *file;
  return tensor_views(std::move(file), [&](const Tensor& t) { return gemma4_views(f, t); });
}

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  const GgufMetadata& m = f.metadata();
  const std::string& model = m.get_string("tokenizer.ggml.model");
  if (model != "llama" && model != "gemma4")
    fail(f, "tokenizer.ggml.model '" + model + "' is not supported (Gemma files use 'llama', Gemma 4 'gemma4')");
  VocabularyData v;
  if (model == "gemma4") {
    v.merges = m.get_array<std::string>("tokenizer.ggml.merges");
    if (v.merges.empty()) fail(f, "metadata key 'tokenizer.ggml.merges' is empty");
  }
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
  const auto add = [&](int32_t id) {
    if (id >= 0 && id < tokenizer.size() && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  add(token_id(f.metadata(), "tokenizer.ggml.eot_token_id"));
  if (f.metadata().get_string("general.architecture") == "gemma4")
    for (const char* end : {"<turn|>", "<|tool_response>"}) add(tokenizer.find(end).value_or(-1));
  return ids;
}

}  // namespace ge::loader
