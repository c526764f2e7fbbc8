#include "models/gemma3n/model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "kernels/ops.h"
#include "tensor/dtype.h"

namespace ge::gemma3n {

namespace {

// AltUp's streams are rescaled to a target RMS with this floor on the mean square (transformers' 1e-5).
constexpr double kMinMeanSquare = 1e-5;

const float kInvSqrt2 = static_cast<float>(1.0 / std::sqrt(2.0));

std::string find_prefix(const nn::LayerSource& source) {
  for (const char* p : {"model.language_model.", "model."})
    if (source.has(std::string(p) + "embed_tokens.weight")) return p;
  throw std::runtime_error(source.describe() + ": missing tensor 'model.language_model.embed_tokens.weight'");
}

// A small float matrix (AltUp's coefficients), widened to f32.
std::vector<float> widened(const nn::LayerSource& s, const std::string& path, int64_t rows, int64_t cols) {
  const nn::Weight w = s.weight(path, rows, cols);
  const Tensor* t = std::get_if<Tensor>(&w);
  if (!t)
    throw std::runtime_error(s.describe() + ": tensor '" + path + ".weight' must be stored as floats");
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) kernels::dequantize_row(*t, r, 1.0f, out.data() + r * cols);
  return out;
}

std::vector<float> widened_vector(const nn::LayerSource& s, const std::string& name, int64_t n) {
  const Tensor t = s.vector(name, n);
  std::vector<float> out(static_cast<size_t>(n));
  kernels::dequantize_row(t, 0, 1.0f, out.data());
  return out;
}

AltUpWeights bind_altup(const nn::LayerSource& s, const Config& c, const std::string& p, float eps) {
  const int64_t n = c.altup_num_inputs, h = c.hidden_size;
  AltUpWeights w;
  w.router_norm = s.rms_norm(p + "router_norm", h, eps, false);
  w.modality_router = s.linear(p + "modality_router", n, h);
  w.prediction_coefs = widened(s, p + "prediction_coefs", n * n, n);
  w.correction_coefs = widened(s, p + "correction_coefs", n, n);
  // transformers clamps the correction coefficients at every use, inference included.
  if (c.altup_coef_clip) {
    const auto clip = static_cast<float>(*c.altup_coef_clip);
    for (float& v : w.correction_coefs) v = std::clamp(v, -clip, clip);
  }
  w.correct_output_scale = widened_vector(s, p + "correct_output_scale", h);
  return w;
}

LayerWeights bind_layer(const nn::LayerSource& s, const Config& c, int64_t l, const std::string& p) {
  const int64_t h = c.hidden_size;
  const int64_t inter = c.layers[l].intermediate_size, hpl = c.hidden_size_per_layer_input;
  const auto eps = static_cast<float>(c.rms_norm_eps);
  const auto norm = [&](const std::string& name, int64_t n) { return s.rms_norm(p + name, n, eps, false); };
  LayerWeights w;
  w.input_layernorm = norm("input_layernorm", h);
  w.self_attn = models::SharedKvAttention::bind(
      s, p, h, {l, c.kv_source(l), c.num_heads, c.num_kv_heads, c.head_dim, c.layers[l].sliding, c.sliding_window},
      eps);
  w.post_attention_layernorm = norm("post_attention_layernorm", h);
  w.pre_feedforward_layernorm = norm("pre_feedforward_layernorm", h);
  w.post_feedforward_layernorm = norm("post_feedforward_layernorm", h);
  w.mlp = nn::GatedMlp::bind(s, p + "mlp.", h, inter);
  w.altup = bind_altup(s, c, p + "altup.", eps);
  w.laurel_left = s.linear(p + "laurel.linear_left", c.laurel_rank, h);
  w.laurel_right = s.linear(p + "laurel.linear_right", h, c.laurel_rank);
  w.post_laurel_norm = norm("laurel.post_laurel_norm", h);
  w.per_layer_gate = models::PerLayerGate::bind(s, p, hpl, h, eps);
  return w;
}

std::optional<MultimodalEmbedder> bind_embedder(const nn::LayerSource& s, const Config& c,
                                                const std::optional<MultimodalIds>& ids, const std::string& p) {
  // The tower's width, from its norm (the table may be MLX-packed).
  const Tensor* norm = s.tensors().find(p + "hard_embedding_norm.weight");
  if (!ids || !norm) return std::nullopt;
  const int64_t dim = norm->shape.size() == 1 ? norm->shape[0] : 0;
  const auto eps = static_cast<float>(ids->rms_norm_eps);
  MultimodalEmbedder e;
  e.vocab_offset = ids->vocab_offset;
  e.embedding = s.embedding(p + "embedding", ids->vocab_size, dim);
  e.hard_embedding_norm = s.rms_norm(p + "hard_embedding_norm", dim, eps, false);
  e.embedding_projection = s.linear(p + "embedding_projection", c.hidden_size, dim);
  e.embedding_post_projection_norm = nn::RMSNorm::unscaled(c.hidden_size, eps);
  return e;
}

// Rows of x [n, width] scaled so that each row's RMS is target[t] (its mean square floored at 1e-5).
void rescale_rows(float* x, const double* target, int64_t n, int64_t width) {
  for (int64_t t = 0; t < n; ++t) {
    float* row = x + t * width;
    double ss = 0;
    for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(row[i]) * row[i];
    const auto factor = static_cast<float>(target[t] / std::sqrt(std::max(ss / width, kMinMeanSquare)));
    for (int64_t i = 0; i < width; ++i) row[i] *= factor;
  }
}

double rms(const float* x, int64_t n) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return std::sqrt(ss / n);
}

// Gemma3nTextMLP's activation sparsity: g = relu(g - (mean(g) + std(g) * multiplier)), the population
// standard deviation (torch.std(unbiased=False)).
void sparsify(float* g, int64_t n, double multiplier) {
  double sum = 0, ss = 0;
  for (int64_t i = 0; i < n; ++i) sum += g[i];
  const double mean = sum / n;
  for (int64_t i = 0; i < n; ++i) ss += (g[i] - mean) * (g[i] - mean);
  const auto cutoff = static_cast<float>(mean + std::sqrt(ss / n) * multiplier);
  for (int64_t i = 0; i < n; ++i) g[i] = std::max(g[i] - cutoff, 0.0f);
}

}  // namespace

Weights bind_weights(const Config& c, const nn::LayerSource& source) {
  const std::string p = find_prefix(source);
  const int64_t h = c.hidden_size;
  const auto eps = static_cast<float>(c.rms_norm_eps);
  Weights w;
  w.embed_tokens = source.embedding(p + "embed_tokens", c.vocab_size, h);
  // A GGUF file holds vocab_size rows (zeros past the text ids); a checkpoint vocab_size_per_layer_input.
  w.per_layer = models::PerLayerInputs::bind(source, p, c.num_layers, c.hidden_size_per_layer_input, h,
                                             c.vocab_size_per_layer_input, eps);
  for (int64_t i = 0; i + 1 < c.altup_num_inputs; ++i) {
    w.altup_projections.push_back(source.linear(p + "altup_projections." + std::to_string(i), h, h));
    w.altup_unembed_projections.push_back(
        source.linear(p + "altup_unembed_projections." + std::to_string(i), h, h));
  }
  w.norm = source.rms_norm(p + "norm", h, eps, false);
  w.lm_head = w.embed_tokens.as_linear();
  w.embed_vision = bind_embedder(source, c, c.vision, "model.embed_vision.");
  w.embed_audio = bind_embedder(source, c, c.audio, "model.embed_audio.");
  for (int64_t l = 0; l < c.num_layers; ++l)
    w.layers.push_back(bind_layer(source, c, l, p + "layers." + std::to_string(l) + "."));
  return w;
}

int64_t parameter_count(const Config& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t n = c.altup_num_inputs, hpl = c.hidden_size_per_layer_input;
  int64_t total = c.vocab_size * h + c.vocab_size_per_layer_input * c.num_layers * hpl +
                  c.num_layers * hpl * h + hpl + 2 * (n - 1) * h * h + h;
  for (const LayerConfig& l : c.layers)
    total += h * (q + 2 * kv) + q * h + 2 * c.head_dim + 5 * h + 3 * h * l.intermediate_size +
             2 * c.laurel_rank * h + h + (n * h + n * n * n + n * n + 2 * h) + 2 * hpl * h + h;
  return total;
}

Model::Model(Config config, const nn::LayerSource& source, int64_t max_chunk)
    : models::Decoder(max_chunk), config_(std::move(config)), weights_(bind_weights(config_, source)), max_chunk_(max_chunk) {
  const Config& c = config_;
  std::vector<std::vector<double>> inv_freq;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    inv_freq.push_back(nn::RopeTables::default_inv_freq(
        c.layers[l].sliding ? c.rope_local_base_freq : c.rope_theta, 1.0, c.head_dim));
  }
  rope_ = nn::RopeTables(inv_freq, max_chunk_);

  int64_t inter = 0;
  for (const LayerConfig& l : c.layers) inter = std::max(inter, l.intermediate_size);
  const auto rows = static_cast<size_t>(max_chunk_), h = static_cast<size_t>(c.hidden_size);
  const auto streams = static_cast<size_t>(c.altup_num_inputs);
  streams_.resize(streams * rows * h);
  predictions_.resize(streams * rows * h);
  per_layer_.resize(rows * c.num_layers * c.hidden_size_per_layer_input);
  gate_per_layer_.resize(rows * c.num_layers * c.hidden_size_per_layer_input);
  int64_t tower = 0;
  for (const auto* e : {&weights_.embed_vision, &weights_.embed_audio})
    if (*e) tower = std::max(tower, (*e)->embedding.dim());
  active_.resize(rows * h);
  normed_.resize(std::max(rows * h, static_cast<size_t>(tower)));
  laurel_.resize(rows * h);
  laurel_rank_.resize(rows * c.laurel_rank);
  q_.resize(rows * c.num_heads * c.head_dim);
  k_.resize(rows * c.num_kv_heads * c.head_dim);
  v_.resize(rows * c.num_kv_heads * c.head_dim);
  attn_.resize(rows * c.num_heads * c.head_dim);
  proj_.resize(rows * h);
  gate_.resize(rows * inter);
  up_.resize(rows * inter);
  router_.resize(rows * streams);
  coefs_.resize(rows * streams * streams);
  rms_.resize(rows);
  per_layer_ids_.resize(rows);
  key_first_.resize(rows);
  key_last_.resize(rows);
}

models::CausalLM::Shape Model::shape() const {
  const Config& c = config_;
  return {c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim,
          c.sliding_window, c.max_position_embeddings};
}

// Every matrix a forward step multiplies by (the routers aside: 4 rows each).
std::vector<const nn::Linear*> Model::matrices() const {
  const Weights& w = weights_;
  std::vector<const nn::Linear*> all = {&w.per_layer.per_layer_model_projection, &w.lm_head};
  for (const auto* group : {&w.altup_projections, &w.altup_unembed_projections})
    for (const nn::Linear& m : *group) all.push_back(&m);
  for (const LayerWeights& l : w.layers)
    for (const nn::Linear* m : {&l.self_attn.q_proj, &l.self_attn.k_proj, &l.self_attn.v_proj, &l.self_attn.o_proj,
                                &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj, &l.laurel_left, &l.laurel_right,
                                &l.per_layer_gate.per_layer_input_gate, &l.per_layer_gate.per_layer_projection})
      if (m->out_features() > 0) all.push_back(m);  // KV-shared layers bind no k/v projections
  return all;
}

std::vector<nn::Linear*> Model::matrices() {
  std::vector<nn::Linear*> all;
  for (const nn::Linear* m : std::as_const(*this).matrices()) all.push_back(const_cast<nn::Linear*>(m));
  return all;
}

size_t Model::weight_bytes_per_token() const {
  size_t bytes = 0;
  for (const nn::Linear* m : matrices()) bytes += nn::weight_bytes(m->weight());
  return bytes + weights_.per_layer.row_bytes();
}

std::string Model::matrix_formats() const {
  std::vector<const nn::Linear*> layers = {&weights_.lm_head};
  for (const LayerWeights& l : weights_.layers)
    for (const nn::Linear* m : {&l.self_attn.q_proj, &l.self_attn.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj})
      layers.push_back(m);
  return nn::formats_summary(layers);
}

void Model::prepare_reduced_activations(const Progress& progress) {
  const std::vector<nn::Linear*> all = matrices();
  for (size_t i = 0; i < all.size(); ++i) {
    all[i]->prepare_reduced_activations();
    if (progress) progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(all.size()));
  }
}

void Model::quantize_lm_head(DType block) {
  weights_.lm_head = weights_.lm_head.quantized_copy(block);
  if (reduced_anywhere()) weights_.lm_head.prepare_reduced_activations();
}

nn::KVCache Model::make_cache(int64_t context, DType dtype) const {
  std::vector<int64_t> capacity;
  for (int64_t l = 0; l < config_.first_kv_shared_layer(); ++l)
    capacity.push_back(config_.layers[l].sliding ? std::min(context, config_.sliding_window + max_chunk_ - 1)
                                                 : context);
  return nn::KVCache(std::move(capacity), context, config_.num_kv_heads, config_.head_dim, dtype);
}

bool Model::can_rewind(const nn::KVCache& cache, int64_t length, int64_t keep) const {
  return models::can_rewind(cache, config_.sliding_window, length, keep);
}

void Model::check_tokens(std::span<const int32_t> tokens, int64_t start_pos,
                         std::span<const models::EmbeddingBlock>) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    const std::string where = "token id " + std::to_string(id) + " at position " +
                              std::to_string(start_pos + static_cast<int64_t>(i));
    if (id < 0 || id >= config_.vocab_size)
      throw std::runtime_error(where + " is outside the vocabulary (" + std::to_string(config_.vocab_size) +
                               " rows)");
    const bool multimodal = weights_.embed_vision || weights_.embed_audio;
    const int64_t rows = weights_.per_layer.embed_tokens_per_layer.num_embeddings();
    if (!multimodal && id >= rows)
      throw std::runtime_error(where + " has no row in the per-layer embedding (" + std::to_string(rows) + " rows)");
  }
}

void Model::forward_rows(std::span<const int32_t> tokens, kernels::ThreadPool& pool, const models::HiddenObserver* observer,
                         std::span<const models::EmbeddingBlock>) {
  const auto n = static_cast<int64_t>(tokens.size());
  step_rows_ = n;
  embed(tokens, pool);
  per_layer_inputs(tokens, n, pool);
  expand_streams(n, pool);
  if (observer) (*observer)(0, streams_.data(), positions_[0], n);
  rope_.prepare(positions_.data(), n);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    decoder_layer(l, n, pool);
    if (observer) (*observer)(l + 1, streams_.data(), positions_[0], n);
  }
}

// Stream 0 (the scaled token embedding, or a modality embedder's output) into active_.
void Model::embed(std::span<const int32_t> tokens, kernels::ThreadPool& pool) {
  const int64_t h = config_.hidden_size;
  const float scale = models::embedding_scale(h);
  for (size_t t = 0; t < tokens.size(); ++t) {
    float* out = active_.data() + t * h;
    const MultimodalEmbedder* mm = nullptr;
    for (const auto* e : {&weights_.embed_vision, &weights_.embed_audio})
      if (*e && tokens[t] >= (*e)->vocab_offset && tokens[t] < (*e)->vocab_offset + (*e)->embedding.num_embeddings())
        mm = &**e;
    if (!mm) {
      weights_.embed_tokens.lookup(tokens[t], scale, out);
      continue;
    }
    float* hard = normed_.data();
    mm->embedding.lookup(tokens[t] - mm->vocab_offset, 1.0f, hard);
    mm->hard_embedding_norm(hard, 1, hard);
    mm->embedding_projection(pool, hard, 1, out);
    mm->embedding_post_projection_norm(out, 1, out);
  }
}

// per_layer_ [n, layers, hidden_per_layer]: the per-layer inputs of the step's tokens.
void Model::per_layer_inputs(std::span<const int32_t> tokens, int64_t n, kernels::ThreadPool& pool) {
  // Gemma3nModel gives ids outside the text vocabulary row 0 of the per-layer table.
  const bool multimodal = weights_.embed_vision || weights_.embed_audio;
  for (int64_t t = 0; t < n; ++t)
    per_layer_ids_[t] = multimodal && tokens[t] >= config_.vocab_size_per_layer_input ? 0 : tokens[t];
  weights_.per_layer.compute(std::span(per_layer_ids_).first(n), active_.data(), n, pool, step_precision_,
                             per_layer_.data(), gate_per_layer_.data());
}

// streams_[0] = the embedding; streams_[i] = altup_projections[i - 1](embedding) at the embedding's RMS.
void Model::expand_streams(int64_t n, kernels::ThreadPool& pool) {
  const int64_t h = config_.hidden_size;
  std::copy(active_.begin(), active_.begin() + n * h, streams_.begin());
  double* target = rms_.data();
  for (int64_t t = 0; t < n; ++t) target[t] = rms(active_.data() + t * h, h);
  for (int64_t i = 1; i < config_.altup_num_inputs; ++i) {
    float* stream = streams_.data() + i * n * h;
    linear(pool, weights_.altup_projections[i - 1], active_.data(), n, stream);
    rescale_rows(stream, target, n, h);
  }
}

void Model::decoder_layer(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const LayerWeights& w = weights_.layers[l];
  const int64_t h = config_.hidden_size;
  altup_predict(w.altup, n, pool);
  const float* active = predictions_.data() + config_.altup_active_idx * n * h;
  w.input_layernorm(active, n, normed_.data());

  linear(pool, w.laurel_left, normed_.data(), n, laurel_rank_.data());
  linear(pool, w.laurel_right, laurel_rank_.data(), n, laurel_.data());
  w.post_laurel_norm(laurel_.data(), n, laurel_.data());
  kernels::add_inplace(laurel_.data(), normed_.data(), n * h);

  attention(l, n, pool);  // normed_ -> proj_
  for (int64_t i = 0; i < n * h; ++i) active_[i] = (active[i] + proj_[i] + laurel_[i]) * kInvSqrt2;
  mlp(l, n, pool);  // active_ += MLP(active_)
  altup_correct(w.altup, n, pool);
  per_layer_update(l, n, pool);
}

// out [n, altup_num_inputs] = tanh(modality_router(router_norm(x) / hidden)), exact: the router picks
// mixing coefficients, a matrix of 4 rows.
void Model::router(const AltUpWeights& w, const float* x, int64_t n, kernels::ThreadPool& pool, float* out) {
  const int64_t h = config_.hidden_size;
  w.router_norm(x, n, normed_.data());
  const float inv = 1.0f / static_cast<float>(h);
  for (int64_t i = 0; i < n * h; ++i) normed_[i] *= inv;
  w.modality_router(pool, normed_.data(), n, out);
  for (int64_t i = 0; i < n * config_.altup_num_inputs; ++i) out[i] = std::tanh(out[i]);
}

// predictions_[k] = streams_[k] + sum_j C[k][j] streams_[j], C = prediction_coefs(router(active stream)).
void Model::altup_predict(const AltUpWeights& w, int64_t n, kernels::ThreadPool& pool) {
  const int64_t s = config_.altup_num_inputs, h = config_.hidden_size;
  router(w, streams_.data() + config_.altup_active_idx * n * h, n, pool, router_.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t m = 0; m < s * s; ++m) {
      float sum = 0;
      for (int64_t j = 0; j < s; ++j) sum += router_[t * s + j] * w.prediction_coefs[m * s + j];
      coefs_[t * s * s + m] = sum;
    }
  pool.run(n, [&](int64_t t) {
    for (int64_t k = 0; k < s; ++k) {
      float* out = predictions_.data() + (k * n + t) * h;
      std::copy_n(streams_.data() + (k * n + t) * h, h, out);
      for (int64_t j = 0; j < s; ++j) {
        const float c = coefs_[t * s * s + k * s + j];
        const float* x = streams_.data() + (j * n + t) * h;
        for (int64_t i = 0; i < h; ++i) out[i] += c * x[i];
      }
    }
  });
}

// streams_[k] = predictions_[k] + (correction_coefs(router(active_))[k] + 1) * (active_ - predictions_[a]).
void Model::altup_correct(const AltUpWeights& w, int64_t n, kernels::ThreadPool& pool) {
  const int64_t s = config_.altup_num_inputs, h = config_.hidden_size, a = config_.altup_active_idx;
  router(w, active_.data(), n, pool, router_.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < s; ++k) {
      float sum = 1.0f;
      for (int64_t j = 0; j < s; ++j) sum += router_[t * s + j] * w.correction_coefs[k * s + j];
      coefs_[t * s + k] = sum;
    }
  pool.run(n, [&](int64_t t) {
    const float* activated = active_.data() + t * h;
    const float* predicted_active = predictions_.data() + (a * n + t) * h;
    for (int64_t k = 0; k < s; ++k) {
      const float c = coefs_[t * s + k];
      const float* p = predictions_.data() + (k * n + t) * h;
      float* out = streams_.data() + (k * n + t) * h;
      for (int64_t i = 0; i < h; ++i) out[i] = p[i] + c * (activated[i] - predicted_active[i]);
    }
  });
}

// normed_ (the input-normed active prediction) -> proj_ = post_attention_layernorm(o_proj(attention)).
void Model::attention(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const LayerWeights& w = weights_.layers[l];
  const models::SharedKvAttention::Step step{rope_, positions_, caches_, one_sequence_, step_precision_};
  w.self_attn(pool, step, normed_.data(), n,
              {q_.data(), k_.data(), v_.data(), attn_.data(), key_first_.data(), key_last_.data()}, proj_.data());
  w.post_attention_layernorm(proj_.data(), n, proj_.data());
}

// active_ += post_feedforward_layernorm(down(gelu(sparsified gate) * up)) of pre_feedforward_layernorm(active_).
void Model::mlp(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const LayerWeights& w = weights_.layers[l];
  const LayerConfig& lc = config_.layers[l];
  const int64_t inter = lc.intermediate_size, h = config_.hidden_size;
  w.pre_feedforward_layernorm(active_.data(), n, normed_.data());
  w.mlp.project(pool, step_precision_, normed_.data(), n, gate_.data(), up_.data());
  if (lc.activation_sparsity > 0)
    pool.run(n, [&](int64_t t) { sparsify(gate_.data() + t * inter, inter, lc.sparsity_std_multiplier); });
  w.mlp.combine(pool, step_precision_, gate_.data(), up_.data(), n, proj_.data());
  w.post_feedforward_layernorm(proj_.data(), n, proj_.data());
  kernels::add_inplace(active_.data(), proj_.data(), n * h);
}

// The corrected active stream (times correct_output_scale) gates the layer's per-layer input, whose
// projection is added to streams 1..n-1.
void Model::per_layer_update(int64_t l, int64_t n, kernels::ThreadPool& pool) {
  const Config& c = config_;
  const LayerWeights& w = weights_.layers[l];
  const int64_t h = c.hidden_size, hpl = c.hidden_size_per_layer_input;
  const float* first = streams_.data() + c.altup_active_idx * n * h;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < h; ++i)
      normed_[t * h + i] = c.altup_correct_scale ? first[t * h + i] * w.altup.correct_output_scale[i]
                                                 : first[t * h + i];
  w.per_layer_gate(pool, step_precision_, normed_.data(), n, per_layer_.data() + l * hpl, c.num_layers * hpl,
                   gate_per_layer_.data(), proj_.data());
  for (int64_t k = 1; k < c.altup_num_inputs; ++k)
    kernels::add_inplace(streams_.data() + k * n * h, proj_.data(), n * h);
}

// The streams of rows [first_row, first_row + n_rows) unprojected to stream 0's RMS and averaged, then
// the final norm, the tied head and the soft-cap.
void Model::lm_head(int64_t first_row, int64_t n_rows, kernels::ThreadPool& pool, float* logits) {
  const Config& c = config_;
  const int64_t h = c.hidden_size, s = c.altup_num_inputs;
  const int64_t rows = step_rows_;
  float* mean = active_.data();
  double* target = rms_.data();
  for (int64_t t = 0; t < n_rows; ++t) {
    const float* x0 = streams_.data() + (first_row + t) * h;
    target[t] = rms(x0, h);
    std::copy_n(x0, h, mean + t * h);
  }
  for (int64_t i = 1; i < s; ++i) {
    linear(pool, weights_.altup_unembed_projections[i - 1], streams_.data() + (i * rows + first_row) * h,
           n_rows, proj_.data());
    rescale_rows(proj_.data(), target, n_rows, h);
    kernels::add_inplace(mean, proj_.data(), n_rows * h);
  }
  const float inv = 1.0f / static_cast<float>(s);
  for (int64_t i = 0; i < n_rows * h; ++i) mean[i] *= inv;
  weights_.norm(mean, n_rows, normed_.data());
  linear(pool, weights_.lm_head, normed_.data(), n_rows, logits);
  if (c.final_logit_softcapping)
    kernels::soft_cap(logits, n_rows * c.vocab_size, static_cast<float>(*c.final_logit_softcapping));
}

void Model::linear(kernels::ThreadPool& pool, const nn::Linear& layer, const float* x, int64_t n,
                   float* y) const {
  layer(pool, x, n, y, step_precision_);
}

}  // namespace ge::gemma3n
