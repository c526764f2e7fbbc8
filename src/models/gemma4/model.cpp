#include "models/gemma4/model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/ops.h"
#include "tensor/dtype.h"

namespace ge::gemma4 {

namespace {

std::string find_prefix(const nn::LayerSource& source) {
  for (const char* p : {"model.language_model.", "model.", "language_model.model."})
    if (source.has(std::string(p) + "embed_tokens.weight")) return p;
  throw std::runtime_error(source.describe() + ": missing tensor 'model.language_model.embed_tokens.weight'");
}

std::vector<float> widened_vector(const nn::LayerSource& s, const std::string& name, int64_t n) {
  const Tensor t = s.vector(name, n);
  std::vector<float> out(static_cast<size_t>(n));
  kernels::dequantize_row(t, 0, 1.0f, out.data());
  return out;
}

// Expert e's rows of a stacked weight of `rows` rows per expert, from `first` on.
std::vector<nn::Linear> expert_rows(const nn::Weight& stacked, int64_t experts, int64_t rows_per_expert,
                                    int64_t first, int64_t count) {
  std::vector<nn::Linear> out;
  for (int64_t e = 0; e < experts; ++e) out.emplace_back(nn::row_slice(stacked, e * rows_per_expert + first, count));
  return out;
}

Experts bind_experts(const nn::LayerSource& s, const Config& c, const std::string& p, float eps) {
  const int64_t h = c.hidden_size, n = c.num_experts, mi = c.moe_intermediate_size;
  Experts e;
  e.router_norm = nn::RMSNorm::unscaled(h, eps);
  e.router_scale = widened_vector(s, p + "router.scale", h);
  e.router_proj = s.linear(p + "router.proj", n, h);
  e.per_expert_scale = widened_vector(s, p + "router.per_expert_scale", n);
  // Gemma4TextExperts' fused gate_up (gate rows first), or mlx-lm's SwitchGLU with the two apart.
  if (s.has(p + "experts.gate_up_proj") || s.has(p + "experts.gate_up_proj.weight")) {
    const nn::Weight gate_up = s.stacked_weight(p + "experts.gate_up_proj", n, 2 * mi, h);
    e.gate = expert_rows(gate_up, n, 2 * mi, 0, mi);
    e.up = expert_rows(gate_up, n, 2 * mi, mi, mi);
    e.down = expert_rows(s.stacked_weight(p + "experts.down_proj", n, h, mi), n, h, 0, h);
  } else {
    const std::string glu = p + "experts.switch_glu.";
    e.gate = expert_rows(s.stacked_weight(glu + "gate_proj", n, mi, h), n, mi, 0, mi);
    e.up = expert_rows(s.stacked_weight(glu + "up_proj", n, mi, h), n, mi, 0, mi);
    e.down = expert_rows(s.stacked_weight(glu + "down_proj", n, h, mi), n, h, 0, h);
  }
  e.pre_feedforward_layernorm_2 = s.rms_norm(p + "pre_feedforward_layernorm_2", h, eps, false);
  e.post_feedforward_layernorm_1 = s.rms_norm(p + "post_feedforward_layernorm_1", h, eps, false);
  e.post_feedforward_layernorm_2 = s.rms_norm(p + "post_feedforward_layernorm_2", h, eps, false);
  return e;
}

LayerWeights bind_layer(const nn::LayerSource& s, const Config& c, int64_t l, const std::string& p) {
  const LayerConfig& lc = c.layers[l];
  const int64_t h = c.hidden_size;
  const auto eps = static_cast<float>(c.rms_norm_eps);
  const auto norm = [&](const std::string& name, int64_t n) { return s.rms_norm(p + name, n, eps, false); };
  LayerWeights w;
  w.input_layernorm = norm("input_layernorm", h);
  w.self_attn = models::SharedKvAttention::bind(
      s, p, h,
      {l, c.kv_source(l), c.num_heads, lc.num_kv_heads, lc.head_dim, lc.sliding, c.sliding_window, lc.k_eq_v}, eps);
  w.post_attention_layernorm = norm("post_attention_layernorm", h);
  w.pre_feedforward_layernorm = norm("pre_feedforward_layernorm", h);
  w.post_feedforward_layernorm = norm("post_feedforward_layernorm", h);
  w.mlp = nn::GatedMlp::bind(s, p + "mlp.", h, lc.intermediate_size);
  if (c.hidden_size_per_layer_input > 0)
    w.per_layer_gate = models::PerLayerGate::bind(s, p, c.hidden_size_per_layer_input, h, eps);
  if (c.enable_moe_block) w.experts = bind_experts(s, c, p, eps);
  if (s.has(p + "layer_scalar")) {
    const Tensor scalar = s.vector(p + "layer_scalar", 1);
    kernels::dequantize_row(scalar, 0, 1.0f, &w.layer_scalar);
  }
  return w;
}

}  // namespace

Weights bind_weights(const Config& c, const nn::LayerSource& source) {
  const std::string p = find_prefix(source);
  const int64_t h = c.hidden_size;
  const auto eps = static_cast<float>(c.rms_norm_eps);
  Weights w;
  w.embed_tokens = source.embedding(p + "embed_tokens", c.vocab_size, h);
  if (c.hidden_size_per_layer_input > 0)
    w.per_layer = models::PerLayerInputs::bind(source, p, c.num_layers, c.hidden_size_per_layer_input, h,
                                               c.vocab_size_per_layer_input, eps);
  w.norm = source.rms_norm(p + "norm", h, eps, false);
  w.lm_head = w.embed_tokens.as_linear();
  for (int64_t l = 0; l < c.num_layers; ++l)
    w.layers.push_back(bind_layer(source, c, l, p + "layers." + std::to_string(l) + "."));
  return w;
}

Model::Model(Config config, const nn::LayerSource& source, int64_t max_chunk)
    : models::Decoder(max_chunk),
      config_(std::move(config)),
      weights_(bind_weights(config_, source)),
      tensors_(source.tensors()),
      max_chunk_(max_chunk) {
  const Config& c = config_;
  std::vector<std::vector<double>> inv_freq;
  int64_t q_width = 0, kv_width = 0, inter = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerConfig& lc = c.layers[l];
    inv_freq.push_back(rope_inv_freq(lc));
    q_width = std::max(q_width, c.num_heads * lc.head_dim);
    kv_width = std::max(kv_width, lc.num_kv_heads * lc.head_dim);
    inter = std::max(inter, lc.intermediate_size);
  }
  rope_ = nn::RopeTables(inv_freq, max_chunk_);
  const auto rows = static_cast<size_t>(max_chunk_), h = static_cast<size_t>(c.hidden_size);
  const auto per_layer = static_cast<size_t>(c.num_layers * c.hidden_size_per_layer_input);
  hidden_.resize(rows * h);
  normed_.resize(rows * h);
  q_.resize(rows * q_width);
  k_.resize(rows * kv_width);
  v_.resize(rows * kv_width);
  attn_.resize(rows * q_width);
  proj_.resize(rows * h);
  gate_.resize(rows * inter);
  up_.resize(rows * inter);
  per_layer_.resize(rows * per_layer);
  per_layer_gate_.resize(std::max(rows * c.hidden_size_per_layer_input, per_layer));
  ids_.resize(rows);
  if (c.enable_moe_block) {
    const auto k = static_cast<size_t>(c.top_k_experts), mi = static_cast<size_t>(c.moe_intermediate_size);
    chosen_.resize(rows * k);
    chosen_weight_.resize(rows * k);
    router_logits_.resize(rows * c.num_experts);
    moe_in_.resize(rows * h);
    moe_gathered_.resize(rows * h);
    moe_gate_.resize(rows * mi);
    moe_up_.resize(rows * mi);
    moe_act_.resize(rows * mi);
    expert_order_.resize(static_cast<size_t>(c.num_experts));
    moe_out_.resize(rows * h);
    moe_sum_.resize(rows * h);
    routed_rows_.resize(rows);
  }
  key_first_.resize(rows);
  key_last_.resize(rows);
}

models::CausalLM::Shape Model::shape() const {
  const Config& c = config_;
  return {c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.layers[0].num_kv_heads, c.layers[0].head_dim,
          c.sliding_window, c.max_position_embeddings};
}

// Every matrix a forward step may multiply by: with `all_experts` false, those every token reads (the
// experts' are read only where routed).
std::vector<const nn::Linear*> Model::matrices(bool all_experts) const {
  std::vector<const nn::Linear*> all = {&weights_.lm_head};
  if (weights_.per_layer) all.push_back(&weights_.per_layer->per_layer_model_projection);
  for (const LayerWeights& l : weights_.layers) {
    for (const nn::Linear* m : {&l.self_attn.q_proj, &l.self_attn.k_proj, &l.self_attn.v_proj, &l.self_attn.o_proj,
                                &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj})
      if (m->out_features() > 0) all.push_back(m);
    if (l.per_layer_gate)
      for (const nn::Linear* m : {&l.per_layer_gate->per_layer_input_gate, &l.per_layer_gate->per_layer_projection})
        all.push_back(m);
    if (l.experts) {
      all.push_back(&l.experts->router_proj);
      if (all_experts)
        for (const auto* group : {&l.experts->gate, &l.experts->up, &l.experts->down})
          for (const nn::Linear& m : *group) all.push_back(&m);
    }
  }
  return all;
}

std::string Model::matrix_formats() const {
  std::vector<const nn::Linear*> layers = {&weights_.lm_head};
  for (const LayerWeights& l : weights_.layers)
    for (const nn::Linear* m : {&l.self_attn.q_proj, &l.self_attn.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj})
      layers.push_back(m);
  return nn::formats_summary(layers);
}

int64_t Model::parameter_count() const {
  int64_t total = weights_.embed_tokens.num_embeddings() * weights_.embed_tokens.dim();
  for (const nn::Linear* m : matrices(true))
    if (m != &weights_.lm_head) total += m->out_features() * m->in_features();
  if (weights_.per_layer)
    total += weights_.per_layer->embed_tokens_per_layer.num_embeddings() * weights_.per_layer->embed_tokens_per_layer.dim();
  return total;
}

size_t Model::weight_bytes_per_token() const {
  size_t bytes = 0;
  for (const nn::Linear* m : matrices(false)) bytes += nn::weight_bytes(m->weight());
  for (const LayerWeights& l : weights_.layers)  // top_k routed experts (the active parameters)
    if (l.experts)
      bytes += static_cast<size_t>(config_.top_k_experts) *
               (nn::weight_bytes(l.experts->gate[0].weight()) + nn::weight_bytes(l.experts->up[0].weight()) +
                nn::weight_bytes(l.experts->down[0].weight()));
  return bytes + (weights_.per_layer ? weights_.per_layer->row_bytes() : 0);
}

// The experts are most of a MoE model and each token reads few of them: once repacked, their stored weights
// leave memory (the repacked copy is all the fast path reads), so the model is held once, not twice.
void Model::prepare_reduced_activations(const Progress& progress) {
  const std::vector<const nn::Linear*> shared = matrices(false), all = matrices(true);
  for (size_t i = 0; i < all.size(); ++i) {
    // The layers are this model's own: matrices() lists them const for the readers.
    auto* layer = const_cast<nn::Linear*>(all[i]);
    const bool expert = std::find(shared.begin(), shared.end(), all[i]) == shared.end();
    if (layer->prepare_reduced_activations(/*keep_reading_original=*/!expert))
      for (const auto range : nn::weight_ranges(layer->weight())) tensors_.release(range.data(), range.size());
    if (progress) progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(all.size()));
  }
}

void Model::quantize_lm_head(DType block) {
  weights_.lm_head = weights_.lm_head.quantized_copy(block);
  if (reduced_anywhere()) weights_.lm_head.prepare_reduced_activations();
}

nn::KVCache Model::make_cache(int64_t context, DType dtype) const {
  std::vector<nn::KVCache::LayerShape> layers;
  for (int64_t l = 0; l < config_.first_kv_shared_layer(); ++l) {
    const LayerConfig& lc = config_.layers[l];
    layers.push_back({lc.sliding ? std::min(context, config_.sliding_window + max_chunk_ - 1) : context,
                      lc.num_kv_heads, lc.head_dim});
  }
  return nn::KVCache(layers, context, dtype);
}

bool Model::can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const {
  return models::can_rewind(cache, config_.sliding_window, length, keep);
}

void Model::check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                         std::span<const models::EmbeddingBlock>) const {
  const int64_t per_layer_rows =
      weights_.per_layer ? weights_.per_layer->embed_tokens_per_layer.num_embeddings() : config_.vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || id >= std::min(config_.vocab_size, per_layer_rows))
      throw std::runtime_error("token id " + std::to_string(id) + " at position " +
                               std::to_string(start_pos + static_cast<int64_t>(i)) + " is outside the vocabulary (" +
                               std::to_string(std::min(config_.vocab_size, per_layer_rows)) + " rows)");
  }
}

void Model::forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const models::HiddenObserver* observer,
                         std::span<const models::EmbeddingBlock>) {
  const Config& c = config_;
  const auto n = static_cast<int64_t>(tokens.size());
  const int64_t h = c.hidden_size, hpl = c.hidden_size_per_layer_input;
  embed(tokens, pool);
  if (observer) (*observer)(0, hidden_.data(), positions_[0], n);
  rope_.prepare(positions_.data(), n);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    attention(l, n, pool);
    mlp(l, n, pool);
    if (w.per_layer_gate) {
      (*w.per_layer_gate)(pool, step_precision_, hidden_.data(), n, per_layer_.data() + l * hpl,
                          c.num_layers * hpl, per_layer_gate_.data(), proj_.data());
      kernels::add_inplace(hidden_.data(), proj_.data(), n * h);
    }
    if (w.layer_scalar != 1.0f)
      for (int64_t i = 0; i < n * h; ++i) hidden_[i] *= w.layer_scalar;
    if (observer) (*observer)(l + 1, hidden_.data(), positions_[0], n);
  }
}

// hidden_ = the scaled embeddings (placeholder ids as pad, as Gemma4Model does), and per_layer_ their
// per-layer inputs.
void Model::embed(std::span<const int32_t> tokens, kernels::ThreadPool& pool) {
  const Config& c = config_;
  const int64_t h = c.hidden_size, n = static_cast<int64_t>(tokens.size());
  const float scale = models::embedding_scale(h);
  for (int64_t t = 0; t < n; ++t) {
    const bool placeholder =
        std::find(c.placeholder_ids.begin(), c.placeholder_ids.end(), tokens[t]) != c.placeholder_ids.end();
    ids_[t] = placeholder ? c.pad_token_id : tokens[t];
    weights_.embed_tokens.lookup(ids_[t], scale, hidden_.data() + t * h);
  }
  if (weights_.per_layer)
    weights_.per_layer->compute(std::span(ids_).first(n), hidden_.data(), n, pool, step_precision_,
                                per_layer_.data(), per_layer_gate_.data());
}

// hidden_ += post_attention_layernorm(o_proj(attention(input_layernorm(hidden_)))).
void Model::attention(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const LayerWeights& w = weights_.layers[l];
  w.input_layernorm(hidden_.data(), n, normed_.data());
  const models::SharedKvAttention::Step step{rope_, positions_, caches_, one_sequence_, step_precision_};
  w.self_attn(pool, step, normed_.data(), n,
              {q_.data(), k_.data(), v_.data(), attn_.data(), key_first_.data(), key_last_.data()}, proj_.data());
  w.post_attention_layernorm(proj_.data(), n, proj_.data());
  kernels::add_inplace(hidden_.data(), proj_.data(), n * config_.hidden_size);
}

// hidden_ += post_feedforward_layernorm(f): f = down(gelu(gate) * up) of pre_feedforward_layernorm(hidden_);
// on a MoE layer f = post_feedforward_layernorm_1(that) + post_feedforward_layernorm_2(the experts' sum).
void Model::mlp(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const LayerWeights& w = weights_.layers[l];
  const int64_t h = config_.hidden_size;
  w.pre_feedforward_layernorm(hidden_.data(), n, normed_.data());
  w.mlp.project(pool, step_precision_, normed_.data(), n, gate_.data(), up_.data());
  w.mlp.combine(pool, step_precision_, gate_.data(), up_.data(), n, proj_.data());
  if (w.experts) {
    const Experts& e = *w.experts;
    e.post_feedforward_layernorm_1(proj_.data(), n, proj_.data());
    route(e, n, pool);
    run_experts(e, n, pool, moe_sum_.data());
    e.post_feedforward_layernorm_2(moe_sum_.data(), n, moe_sum_.data());
    kernels::add_inplace(proj_.data(), moe_sum_.data(), n * h);
  }
  w.post_feedforward_layernorm(proj_.data(), n, proj_.data());
  kernels::add_inplace(hidden_.data(), proj_.data(), n * h);
}

// Gemma4TextRouter on the residual after attention: probabilities = softmax(proj(norm(r) * scale /
// sqrt(hidden))), the top_k of them renormalised to sum 1, times their experts' scales. In f32 with exact
// matmuls, whatever the step's precision: the closest choice in the fixture is 1.3e-3 apart.
void Model::route(const Experts& e, int64_t n, kernels::ThreadPool& pool) {
  const Config& c = config_;
  const int64_t h = c.hidden_size, experts = c.num_experts, k = c.top_k_experts;
  e.router_norm(hidden_.data(), n, moe_in_.data());
  const auto inv_sqrt_hidden = static_cast<float>(1.0 / std::sqrt(static_cast<double>(h)));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < h; ++i) moe_in_[t * h + i] *= e.router_scale[i] * inv_sqrt_hidden;
  e.router_proj(pool, moe_in_.data(), n, router_logits_.data(), kernels::Precision::kExact);
  std::vector<int32_t>& order = expert_order_;
  for (int64_t t = 0; t < n; ++t) {
    const float* logits = router_logits_.data() + t * experts;
    for (int64_t i = 0; i < experts; ++i) order[i] = static_cast<int32_t>(i);
    // Ties go to the lower index, as a stable sort of the probabilities does.
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    // softmax over all experts, renormalised over the chosen: exp(l_i - max) / sum over the chosen.
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(logits[order[j]] - logits[order[0]]));
    for (int64_t j = 0; j < k; ++j) {
      const int32_t chosen = order[j];
      chosen_[t * k + j] = chosen;
      chosen_weight_[t * k + j] = static_cast<float>(
          std::exp(static_cast<double>(logits[chosen] - logits[order[0]])) / sum * e.per_expert_scale[chosen]);
    }
  }
}

// out [n, hidden] = sum over each row's chosen experts of weight * down(gelu(gate) * up) of
// pre_feedforward_layernorm_2(r): the rows routed to one expert go through its matrices together.
void Model::run_experts(const Experts& e, int64_t n, kernels::ThreadPool& pool, float* out) {
  const Config& c = config_;
  const int64_t h = c.hidden_size, k = c.top_k_experts, mi = c.moe_intermediate_size;
  e.pre_feedforward_layernorm_2(hidden_.data(), n, moe_in_.data());
  std::fill_n(out, n * h, 0.0f);
  for (int64_t expert = 0; expert < c.num_experts; ++expert) {
    int64_t m = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < k; ++j)
        if (chosen_[t * k + j] == expert) {
          routed_rows_[m] = t * k + j;
          std::copy_n(moe_in_.data() + t * h, h, moe_gathered_.data() + m * h);
          ++m;
        }
    if (m == 0) continue;
    linear(pool, e.gate[expert], moe_gathered_.data(), m, moe_gate_.data());
    linear(pool, e.up[expert], moe_gathered_.data(), m, moe_up_.data());
    kernels::gelu_tanh_mul(moe_gate_.data(), moe_up_.data(), m * mi, moe_act_.data());
    linear(pool, e.down[expert], moe_act_.data(), m, moe_out_.data());
    for (int64_t r = 0; r < m; ++r) {
      const int64_t t = routed_rows_[r] / k;
      const float weight = chosen_weight_[routed_rows_[r]];
      for (int64_t i = 0; i < h; ++i) out[t * h + i] += weight * moe_out_[r * h + i];
    }
  }
}

void Model::lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) {
  const Config& c = config_;
  float* rows = normed_.data() + first_row * c.hidden_size;
  weights_.norm(hidden_.data() + first_row * c.hidden_size, n_rows, rows);
  linear(pool, weights_.lm_head, rows, n_rows, logits);
  if (c.final_logit_softcapping)
    kernels::soft_cap(logits, n_rows * c.vocab_size, static_cast<float>(*c.final_logit_softcapping));
}

void Model::linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n,
                   float* y) const {
  layer(pool, x, n, y, step_precision_);
}

}  // namespace ge::gemma4
