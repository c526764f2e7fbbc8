#include "models/siglip/model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace ge::siglip {

namespace {

EncoderLayer bind_layer(const nn::LayerSource& s, const VisionConfig& c, const std::string& p) {
  const int64_t d = c.hidden_size;
  const auto eps = static_cast<float>(c.layer_norm_eps);
  EncoderLayer w;
  w.layer_norm1 = s.layer_norm(p + "layer_norm1", d, eps);
  w.q_proj = s.linear(p + "self_attn.q_proj", d, d);
  w.k_proj = s.linear(p + "self_attn.k_proj", d, d);
  w.v_proj = s.linear(p + "self_attn.v_proj", d, d);
  w.out_proj = s.linear(p + "self_attn.out_proj", d, d);
  w.layer_norm2 = s.layer_norm(p + "layer_norm2", d, eps);
  w.fc1 = s.linear(p + "mlp.fc1", c.intermediate_size, d);
  w.fc2 = s.linear(p + "mlp.fc2", d, c.intermediate_size);
  return w;
}

VisionWeights bind_weights(const VisionConfig& c, const nn::LayerSource& s, const std::string& prefix) {
  VisionWeights w;
  w.patch_embedding = s.flattened_linear(prefix + "embeddings.patch_embedding", c.hidden_size,
                                         {c.num_channels, c.patch_size, c.patch_size});
  w.position_embedding = s.embedding(prefix + "embeddings.position_embedding", c.num_patches(), c.hidden_size);
  for (int64_t i = 0; i < c.num_layers; ++i)
    w.layers.push_back(bind_layer(s, c, prefix + "encoder.layers." + std::to_string(i) + "."));
  w.post_layernorm = s.layer_norm(prefix + "post_layernorm", c.hidden_size, static_cast<float>(c.layer_norm_eps));
  return w;
}

// `module` as the checkpoint names it: transformers >= 4.52 nests the towers under "model.".
std::string module_path(const nn::LayerSource& s, const std::string& module, const std::string& tensor) {
  for (const char* p : {"", "model."})
    if (s.has(p + module + tensor)) return p + module;
  throw std::runtime_error(s.describe() + ": missing tensor '" + module + tensor +
                           "' (the vision tower of a Gemma 3 model)");
}

}  // namespace

VisionTower::VisionTower(VisionConfig config, const nn::LayerSource& source, const std::string& prefix)
    : config_(config), weights_(bind_weights(config_, source, prefix)) {
  const auto n = static_cast<size_t>(config_.num_patches());
  const auto d = static_cast<size_t>(config_.hidden_size);
  hidden_.resize(n * d);
  normed_.resize(n * std::max<size_t>(d, static_cast<size_t>(config_.patch_values())));
  q_.resize(n * d);
  k_.resize(n * d);
  v_.resize(n * d);
  attn_.resize(n * d);
  mlp_.resize(n * static_cast<size_t>(config_.intermediate_size));
}

void VisionTower::forward(const float* pixels, kernels::ThreadPool& pool, float* out) {
  embed_patches(pixels, pool);
  for (const EncoderLayer& layer : weights_.layers) {
    attention_block(layer, pool);
    mlp_block(layer, pool);
  }
  weights_.post_layernorm(hidden_.data(), config_.num_patches(), out);
}

// Conv2d with stride = kernel = patch and no padding is a matmul over the flattened patches, in the
// weight's (channel, row, column) order; the grid is read row by row, as the HF flatten(2) does.
void VisionTower::embed_patches(const float* pixels, kernels::ThreadPool& pool) {
  const VisionConfig& c = config_;
  const int64_t side = c.patches_per_side(), p = c.patch_size, s = c.image_size, values = c.patch_values();
  float* patches = normed_.data();
  for (int64_t gy = 0; gy < side; ++gy)
    for (int64_t gx = 0; gx < side; ++gx) {
      float* row = patches + (gy * side + gx) * values;
      for (int64_t ch = 0; ch < c.num_channels; ++ch)
        for (int64_t y = 0; y < p; ++y) {
          const float* src = pixels + (ch * s + gy * p + y) * s + gx * p;
          std::copy(src, src + p, row + (ch * p + y) * p);
        }
    }
  weights_.patch_embedding(pool, patches, c.num_patches(), hidden_.data());
  float* position = q_.data();  // free until the first layer
  for (int64_t i = 0; i < c.num_patches(); ++i) {
    weights_.position_embedding.lookup(static_cast<int32_t>(i), 1.0f, position);
    kernels::add_inplace(hidden_.data() + i * c.hidden_size, position, c.hidden_size);
  }
}

void VisionTower::attention_block(const EncoderLayer& w, kernels::ThreadPool& pool) {
  const VisionConfig& c = config_;
  const int64_t n = c.num_patches(), d = c.hidden_size, hd = c.head_dim();
  w.layer_norm1(hidden_.data(), n, normed_.data());
  w.q_proj(pool, normed_.data(), n, q_.data());
  w.k_proj(pool, normed_.data(), n, k_.data());
  w.v_proj(pool, normed_.data(), n, v_.data());
  // Every patch attends to every patch (no mask).
  kernels::attend_all(pool, q_.data(), k_.data(), v_.data(), n, c.num_heads, hd, 1.0f / std::sqrt(static_cast<float>(hd)),
                      attn_.data());
  w.out_proj(pool, attn_.data(), n, normed_.data());
  kernels::add_inplace(hidden_.data(), normed_.data(), n * d);
}

void VisionTower::mlp_block(const EncoderLayer& w, kernels::ThreadPool& pool) {
  const VisionConfig& c = config_;
  const int64_t n = c.num_patches(), d = c.hidden_size;
  w.layer_norm2(hidden_.data(), n, normed_.data());
  w.fc1(pool, normed_.data(), n, mlp_.data());
  constexpr int64_t kSlice = 4096;
  const int64_t total = n * c.intermediate_size;
  pool.run((total + kSlice - 1) / kSlice, [&](int64_t s) {
    const int64_t begin = s * kSlice;
    kernels::gelu_tanh(mlp_.data() + begin, std::min(kSlice, total - begin), mlp_.data() + begin);
  });
  w.fc2(pool, mlp_.data(), n, normed_.data());
  kernels::add_inplace(hidden_.data(), normed_.data(), n * d);
}

Gemma3Projector::Gemma3Projector(const Gemma3VisionConfig& config, const nn::LayerSource& source,
                                 const std::string& prefix, bool norm_adds_one)
    : config_(config) {
  const int64_t vd = config.vision.hidden_size, td = config.text_hidden_size;
  mm_soft_emb_norm = source.rms_norm(prefix + "mm_soft_emb_norm", vd, static_cast<float>(config.vision.layer_norm_eps),
                                     norm_adds_one);
  const std::string name = prefix + "mm_input_projection_weight";
  const Tensor* w = source.tensors().find(name);
  if (!w) throw std::runtime_error(source.describe() + ": missing tensor '" + name + "'");
  if (w->shape != std::vector<int64_t>{vd, td})
    throw std::runtime_error(source.describe() + ": tensor '" + name + "' has shape " + shape_string(w->shape) +
                             ", expected " + shape_string({vd, td}) +
                             " (vision hidden size x the text model's hidden size)");
  std::vector<float> row(static_cast<size_t>(td));
  projection_t_.resize(static_cast<size_t>(vd * td));
  for (int64_t i = 0; i < vd; ++i) {
    kernels::dequantize_row(*w, i, 1.0f, row.data());
    for (int64_t j = 0; j < td; ++j) projection_t_[j * vd + i] = row[j];
  }
  Tensor t{name + " (transposed)", DType::F32, {td, vd}, reinterpret_cast<const std::byte*>(projection_t_.data()),
           projection_t_.size() * sizeof(float)};
  projection_ = nn::Linear(t);
  pooled_.resize(static_cast<size_t>(config.mm_tokens_per_image * vd));
}

void Gemma3Projector::forward(const float* patches, kernels::ThreadPool& pool, float* out) {
  const int64_t vd = config_.vision.hidden_size, side = config_.vision.patches_per_side();
  const int64_t per = config_.tokens_per_side(), k = config_.pooling();
  const float inv = 1.0f / static_cast<float>(k * k);
  std::fill(pooled_.begin(), pooled_.end(), 0.0f);
  for (int64_t y = 0; y < side; ++y)
    for (int64_t x = 0; x < side; ++x)
      kernels::add_inplace(pooled_.data() + ((y / k) * per + x / k) * vd, patches + (y * side + x) * vd, vd);
  for (float& v : pooled_) v *= inv;
  mm_soft_emb_norm(pooled_.data(), config_.mm_tokens_per_image, pooled_.data());
  projection_(pool, pooled_.data(), config_.mm_tokens_per_image, out);
}

Gemma3VisionEncoder::Gemma3VisionEncoder(const Gemma3VisionConfig& config, const nn::LayerSource& source,
                                         bool norm_adds_one)
    : config_(config),
      tower_(config.vision, source,
             module_path(source, "vision_tower.vision_model.", "embeddings.patch_embedding.weight")),
      projector_(config, source, module_path(source, "multi_modal_projector.", "mm_input_projection_weight"),
                 norm_adds_one) {
  patches_.resize(static_cast<size_t>(config.vision.num_patches() * config.vision.hidden_size));
}

void Gemma3VisionEncoder::encode(const float* pixels, kernels::ThreadPool& pool, float* features) {
  tower_.forward(pixels, pool, patches_.data());
  projector_.forward(patches_.data(), pool, features);
}

double Gemma3VisionEncoder::flops_per_image() const {
  const VisionConfig& v = config_.vision;
  const double n = static_cast<double>(v.num_patches()), d = static_cast<double>(v.hidden_size);
  const double per_layer = 2 * n * (4 * d * d + 2 * d * static_cast<double>(v.intermediate_size)) + 4 * n * n * d;
  return 2 * n * d * static_cast<double>(v.patch_values()) + static_cast<double>(v.num_layers) * per_layer +
         2 * static_cast<double>(config_.mm_tokens_per_image) * d * static_cast<double>(config_.text_hidden_size);
}

}  // namespace ge::siglip
