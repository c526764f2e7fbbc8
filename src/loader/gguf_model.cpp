#include "loader/gguf_model.h"

#include <functional>
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
  fail(f, "general.architecture '" + arch + "' is not supported (gemma, gemma2, gemma3)");
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

// A GGUF file's tensors under the names a model binds.
class RenamedTensors final : public TensorSource {
 public:
  RenamedTensors(std::unique_ptr<GgufFile> file, const std::function<std::string(const std::string&)>& name_of)
      : file_(std::move(file)) {
    for (const Tensor* t : file_->all()) by_hf_name_[name_of(t->name)] = t;
  }
  const Tensor* find(std::string_view name) const override {
    const auto it = by_hf_name_.find(name);
    return it == by_hf_name_.end() ? nullptr : it->second;
  }
  std::vector<const Tensor*> all() const override { return file_->all(); }
  std::string describe() const override { return file_->describe(); }

 private:
  std::unique_ptr<GgufFile> file_;
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

std::unique_ptr<TensorSource> renamed_tensors(std::unique_ptr<GgufFile> file,
                                              const std::function<std::string(const std::string&)>& name_of) {
  return std::make_unique<RenamedTensors>(std::move(file), name_of);
}

std::unique_ptr<TensorSource> hf_named_tensors(std::unique_ptr<GgufFile> file, Family family) {
  const GgufFile& f = *file;
  return renamed_tensors(std::move(file), [&](const std::string& name) { return hf_name(f, family, name); });
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
