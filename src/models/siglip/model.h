// SigLIP's vision transformer (transformers' SiglipVisionModel, as Gemma 3 runs it: no pooling head) and
// the Gemma 3 multimodal projector (Gemma3MultiModalProjector), read top to bottom like the HF code:
// patches -> Conv2d(stride = kernel = patch) + position embedding -> [LayerNorm -> bidirectional attention
// (biases) -> +residual -> LayerNorm -> fc2(gelu_tanh(fc1)) -> +residual] x L -> LayerNorm
// -> average-pool the patch grid to mm_tokens_per_image -> RMSNorm (1 + w) -> x @ mm_input_projection.
#pragma once
#include <string>
#include <vector>

#include "kernels/thread_pool.h"
#include "models/siglip/config.h"
#include "nn/layer_source.h"
#include "nn/linear.h"

namespace ge::siglip {

struct EncoderLayer {
  nn::LayerNorm layer_norm1;
  nn::Linear q_proj, k_proj, v_proj, out_proj;  // [hidden, hidden] + bias each
  nn::LayerNorm layer_norm2;
  nn::Linear fc1;  // [intermediate, hidden] + bias
  nn::Linear fc2;  // [hidden, intermediate] + bias
};

struct VisionWeights {
  nn::Linear patch_embedding;  // the Conv2d weight [hidden, channels, patch, patch] over flattened patches
  nn::Embedding position_embedding;  // [num_patches, hidden]
  std::vector<EncoderLayer> layers;
  nn::LayerNorm post_layernorm;
};

class VisionTower {
 public:
  // `prefix`: where the tower's modules live ("vision_tower.vision_model." in a Hugging Face folder).
  VisionTower(VisionConfig config, const nn::LayerSource& source, const std::string& prefix);

  const VisionConfig& config() const { return config_; }
  // pixels [channels, image_size, image_size] (the processor's normalized values) ->
  // out [num_patches, hidden], the last hidden state after post_layernorm.
  void forward(const float* pixels, kernels::ThreadPool& pool, float* out);

 private:
  void embed_patches(const float* pixels, kernels::ThreadPool& pool);
  void attention_block(const EncoderLayer& w, kernels::ThreadPool& pool);
  void mlp_block(const EncoderLayer& w, kernels::ThreadPool& pool);

  VisionConfig config_;
  VisionWeights weights_;
  // Activations of one image, allocated once.
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, mlp_;
};

// Average-pools the tower's patch grid to mm_tokens_per_image tokens, norms them and maps them into the
// text model's embedding space.
class Gemma3Projector {
 public:
  // `norm_adds_one`: the soft-embedding norm scales by 1 + w as Hugging Face stores w (GGUF stores w + 1).
  Gemma3Projector(const Gemma3VisionConfig& config, const nn::LayerSource& source, const std::string& prefix,
                  bool norm_adds_one);

  // patches [num_patches, vision hidden] -> out [mm_tokens_per_image, text hidden].
  void forward(const float* patches, kernels::ThreadPool& pool, float* out);

 private:
  Gemma3VisionConfig config_;
  nn::RMSNorm mm_soft_emb_norm;
  // mm_input_projection_weight is a bare [vision hidden, text hidden] parameter used as x @ W; held
  // transposed (a few MB, widened once) so that it is an ordinary Linear.
  std::vector<float> projection_t_;
  nn::Linear projection_;
  std::vector<float> pooled_;
};

// One image's pixels -> the soft-token embeddings that replace its <image_soft_token> ids.
class Gemma3VisionEncoder {
 public:
  // Binds the tower and the projector under any of the prefixes transformers versions save them with.
  Gemma3VisionEncoder(const Gemma3VisionConfig& config, const nn::LayerSource& source, bool norm_adds_one = true);

  const Gemma3VisionConfig& config() const { return config_; }
  // pixels [channels, image_size, image_size] -> features [mm_tokens_per_image, text hidden].
  void encode(const float* pixels, kernels::ThreadPool& pool, float* features);
  // Multiply-adds of one image through the tower and projector, x2 (for GFLOP/s figures).
  double flops_per_image() const;

 private:
  Gemma3VisionConfig config_;
  VisionTower tower_;
  Gemma3Projector projector_;
  std::vector<float> patches_;
};

}  // namespace ge::siglip
