#include "models/gemma/model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace ge::gemma {

namespace {

const char* const kPrefixes[] = {"model.", "language_model.model.", "model.language_model."};

std::string find_prefix(const nn::LayerSource& source) {
  for (const char* p : kPrefixes)
    if (source.has(std::string(p) + "embed_tokens.weight")) return p;
  throw std::runtime_error(source.describe() + ": missing tensor 'model.embed_tokens.weight'");
}

LayerWeights bind_layer(const nn::LayerSource& s, const Config& c, const std::string& p) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const auto norm = [&](const std::string& name, int64_t n) {
    return s.rms_norm(p + name, n, eps, c.norm_adds_one);
  };
  LayerWeights w;
  w.input_layernorm = norm("input_layernorm", h);
  w.q_proj = s.linear(p + "self_attn.q_proj", q, h);
  w.k_proj = s.linear(p + "self_attn.k_proj", kv, h);
  w.v_proj = s.linear(p + "self_attn.v_proj", kv, h);
  w.o_proj = s.linear(p + "self_attn.o_proj", h, q);
  w.mlp = nn::GatedMlp::bind(s, p + "mlp.", h, c.intermediate_size);
  if (c.qk_norm()) {
    w.q_norm = norm("self_attn.q_norm", c.head_dim);
    w.k_norm = norm("self_attn.k_norm", c.head_dim);
  }
  if (c.sandwich_norms()) {
    w.post_attention_layernorm = norm("post_attention_layernorm", h);
    w.pre_feedforward_layernorm = norm("pre_feedforward_layernorm", h);
    w.post_feedforward_layernorm = norm("post_feedforward_layernorm", h);
  } else {
    // Gemma 1's norm between attention and MLP is the MLP's input norm, whatever its name says.
    w.pre_feedforward_layernorm = norm("post_attention_layernorm", h);
  }
  return w;
}

}  // namespace

Weights bind_weights(const Config& c, const nn::LayerSource& source) {
  const std::string prefix = find_prefix(source);
  Weights w;
  w.embed_tokens = source.embedding(prefix + "embed_tokens", c.vocab_size, c.hidden_size);
  w.norm =
      source.rms_norm(prefix + "norm", c.hidden_size, static_cast<float>(c.rms_norm_eps), c.norm_adds_one);
  // mlx-lm drops lm_head when it is absent and computes the tied head from the (quantized) embedding.
  const bool has_head = source.has("lm_head.weight");
  w.lm_head = (c.tie_word_embeddings || !has_head) ? w.embed_tokens.as_linear()
                                                   : source.linear("lm_head", c.vocab_size, c.hidden_size);
  for (int64_t i = 0; i < c.num_layers; ++i)
    w.layers.push_back(bind_layer(source, c, prefix + "layers." + std::to_string(i) + "."));
  return w;
}

std::string matrix_formats(const Weights& w) {
  std::vector<const nn::Linear*> layers = {&w.lm_head};
  for (const auto& l : w.layers)
    for (const nn::Linear* m :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj})
      layers.push_back(m);
  return nn::formats_summary(layers);
}

int64_t parameter_count(const Config& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t norms = (c.sandwich_norms() ? 4 : 2) * h + (c.qk_norm() ? 2 * c.head_dim : 0);
  const int64_t layer = h * (q + 2 * kv) + q * h + 3 * h * c.intermediate_size + norms;
  return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_layers * layer + h;
}

Model::Model(Config config, const nn::LayerSource& source, int64_t max_chunk)
    : models::Decoder(std::max(max_chunk, config.image_block_tokens)),
      config_(std::move(config)),
      weights_(bind_weights(config_, source)),
      max_chunk_(max_chunk),
      chunk_capacity_(std::max(max_chunk, config_.image_block_tokens)) {
  const Config& c = config_;
  std::vector<std::vector<double>> inv_freq;
  for (const LayerConfig& l : c.layers)
    inv_freq.push_back(nn::RopeTables::default_inv_freq(l.rope_base, l.rope_scale, c.head_dim));
  rope_ = nn::RopeTables(inv_freq, chunk_capacity_);

  const auto chunk = static_cast<size_t>(chunk_capacity_);
  hidden_.resize(chunk * c.hidden_size);
  normed_.resize(chunk * c.hidden_size);
  q_.resize(chunk * c.num_heads * c.head_dim);
  k_.resize(chunk * c.num_kv_heads * c.head_dim);
  v_.resize(chunk * c.num_kv_heads * c.head_dim);
  attn_.resize(chunk * c.num_heads * c.head_dim);
  proj_.resize(chunk * c.hidden_size);
  gate_.resize(chunk * c.intermediate_size);
  up_.resize(chunk * c.intermediate_size);
  block_first_.resize(chunk);
  block_last_.resize(chunk);
  key_first_.resize(chunk);
}

models::CausalLM::Shape Model::shape() const {
  const Config& c = config_;
  return {c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim,
          c.sliding_window, c.max_position_embeddings};
}

size_t Model::weight_bytes_per_token() const {
  size_t bytes = nn::weight_bytes(weights_.lm_head.weight());
  for (const LayerWeights& l : weights_.layers)
    for (const nn::Linear* m : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj})
      bytes += nn::weight_bytes(m->weight());
  return bytes;
}

void Model::quantize_lm_head(DType block) {
  weights_.lm_head = weights_.lm_head.quantized_copy(block);
  if (reduced_anywhere()) weights_.lm_head.prepare_reduced_activations();
}

void Model::prepare_reduced_activations(const Progress& progress) {
  const auto total = static_cast<int64_t>(weights_.layers.size()) + 1;
  for (size_t i = 0; i < weights_.layers.size(); ++i) {
    LayerWeights& l = weights_.layers[i];
    for (nn::Linear* layer :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj})
      layer->prepare_reduced_activations();
    if (progress) progress(static_cast<int64_t>(i) + 1, total);
  }
  weights_.lm_head.prepare_reduced_activations();
  if (progress) progress(total, total);
}

nn::KVCache Model::make_cache(int64_t context, DType dtype) const {
  std::vector<int64_t> capacity;
  for (const LayerConfig& l : config_.layers)
    capacity.push_back(l.sliding ? std::min(context, config_.sliding_window + chunk_capacity_ - 1) : context);
  return nn::KVCache(std::move(capacity), context, config_.num_kv_heads, config_.head_dim, dtype);
}

bool Model::can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const {
  return models::can_rewind(cache, config_.sliding_window, length, keep);
}

void Model::check_blocks(std::span<const EmbeddingBlock> blocks, int64_t n_tokens, int64_t start_pos) const {
  int64_t end = 0;
  for (const EmbeddingBlock& b : blocks) {
    const std::string where = "embedding block at position " + std::to_string(start_pos + b.offset);
    if (b.count <= 0 || b.offset < end || b.offset + b.count > n_tokens || !b.embeddings)
      throw std::invalid_argument(where + ": blocks must be non-empty, in order, disjoint and within the " +
                                  std::to_string(n_tokens) + " tokens");
    if (b.count > chunk_capacity_)
      throw std::runtime_error(where + ": " + std::to_string(b.count) +
                               " tokens that attend to each other exceed the " +
                               std::to_string(chunk_capacity_) + " a forward step holds");
    end = b.offset + b.count;
  }
}

void Model::check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                         std::span<const EmbeddingBlock> blocks) const {
  const auto in_block = [&](size_t i) {
    return std::any_of(blocks.begin(), blocks.end(), [&](const EmbeddingBlock& b) {
      return static_cast<int64_t>(i) >= b.offset && static_cast<int64_t>(i) < b.offset + b.count;
    });
  };
  for (size_t i = 0; i < tokens.size(); ++i)
    if ((tokens[i] < 0 || tokens[i] >= config_.vocab_size) && !in_block(i))
      throw std::runtime_error("token id " + std::to_string(tokens[i]) + " at position " +
                               std::to_string(start_pos + static_cast<int64_t>(i)) +
                               " is outside the vocabulary (" + std::to_string(config_.vocab_size) +
                               " rows)");
}

void Model::forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const HiddenObserver* observer,
                         std::span<const EmbeddingBlock> blocks) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  embed(tokens, blocks);
  if (observer) (*observer)(0, hidden_.data(), positions_[0], n);
  rope_.prepare(positions_.data(), n);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    attention_block(l, n, pool);
    mlp_block(l, n, pool);
    if (observer) (*observer)(l + 1, hidden_.data(), positions_[0], n);
  }
}

void Model::embed(std::span<const int32_t> tokens, std::span<const EmbeddingBlock> blocks) {
  const int64_t h = config_.hidden_size;
  const float scale = config_.embed_scale();
  for (size_t t = 0; t < tokens.size(); ++t) {
    weights_.embed_tokens.lookup(tokens[t], scale, hidden_.data() + t * h);
    block_first_[t] = block_last_[t] = positions_[t];
  }
  for (const EmbeddingBlock& b : blocks) {
    std::copy(b.embeddings, b.embeddings + b.count * h, hidden_.data() + b.offset * h);
    for (int64_t t = b.offset; t < b.offset + b.count; ++t) {
      block_first_[t] = positions_[b.offset];
      block_last_[t] = positions_[b.offset + b.count - 1];
    }
  }
}

void Model::attention_block(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const Config& c = config_;
  const LayerWeights& w = weights_.layers[l];
  const int64_t hd = c.head_dim, q_width = c.num_heads * hd, kv_width = c.num_kv_heads * hd;

  w.input_layernorm(hidden_.data(), n, normed_.data());
  linear(pool, w.q_proj, normed_.data(), n, q_.data());
  linear(pool, w.k_proj, normed_.data(), n, k_.data());
  linear(pool, w.v_proj, normed_.data(), n, v_.data());
  if (c.qk_norm()) {
    w.q_norm(q_.data(), n * c.num_heads, q_.data());
    w.k_norm(k_.data(), n * c.num_kv_heads, k_.data());
  }

  for (int64_t t = 0; t < n; ++t) {
    rope_.apply(l, t, q_.data() + t * q_width, c.num_heads);
    rope_.apply(l, t, k_.data() + t * kv_width, c.num_kv_heads);
    caches_[t]->store(l, positions_[t], k_.data() + t * kv_width, v_.data() + t * kv_width);
  }

  // Sliding layers: query i sees key j iff j <= i and i - j < window, or j is in i's image block (which
  // lies within this chunk): always one contiguous run of keys. The ring holds window + chunk - 1 rows,
  // so writing this chunk's keys first never evicts a key one of its queries needs.
  const bool sliding = c.layers[l].sliding;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = positions_[t];
    key_first_[t] = sliding ? std::min(block_first_[t], std::max<int64_t>(0, pos - c.sliding_window + 1)) : 0;
  }
  const nn::AttentionStep step{q_.data(), n, caches_, key_first_.data(), block_last_.data(), one_sequence_};
  nn::attend_cached(pool, step, l, c.num_heads, c.num_kv_heads, hd, c.attention_scale(),
                    static_cast<float>(c.attn_logit_softcapping.value_or(0.0)), attn_.data());

  linear(pool, w.o_proj, attn_.data(), n, proj_.data());
  if (c.sandwich_norms()) w.post_attention_layernorm(proj_.data(), n, proj_.data());
  kernels::add_inplace(hidden_.data(), proj_.data(), n * c.hidden_size);
}

void Model::mlp_block(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const Config& c = config_;
  const LayerWeights& w = weights_.layers[l];
  w.pre_feedforward_layernorm(hidden_.data(), n, normed_.data());
  w.mlp.project(pool, step_precision_, normed_.data(), n, gate_.data(), up_.data());
  w.mlp.combine(pool, step_precision_, gate_.data(), up_.data(), n, proj_.data());
  if (c.sandwich_norms()) w.post_feedforward_layernorm(proj_.data(), n, proj_.data());
  kernels::add_inplace(hidden_.data(), proj_.data(), n * c.hidden_size);
}

void Model::linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n,
                   float* y) const {
  layer(pool, x, n, y, step_precision_);
}

void Model::lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) {
  const Config& c = config_;
  float* rows = normed_.data() + first_row * c.hidden_size;
  weights_.norm(hidden_.data() + first_row * c.hidden_size, n_rows, rows);
  linear(pool, weights_.lm_head, rows, n_rows, logits);
  if (c.final_logit_softcapping)
    kernels::soft_cap(logits, n_rows * c.vocab_size, static_cast<float>(*c.final_logit_softcapping));
}

}  // namespace ge::gemma
