// A Gemma GGUF file (arch gemma, gemma2, gemma3, as `gemma convert` or llama.cpp's converter writes it)
// seen as the model expects a checkpoint: the config rebuilt from the metadata, the tensors under their
// Hugging Face names, the vocabulary from the tokenizer.ggml.* arrays.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "formats/gguf.h"
#include "models/gemma/config.h"
#include "models/gemma3n/config.h"
#include "models/gemma4/config.h"
#include "tensor/tensor_source.h"
#include "tokenizer/tokenizer.h"

namespace ge::loader {

// Hyperparameters with llama.cpp's reading of them, plus the keys of ours `gemma convert` writes where
// llama.cpp has none (convert/gemma_text.cpp): the sliding layers are <arch>.attention.sliding_window_layers
// when given, else those of the period <arch>.attention.sliding_window_pattern (default: Gemma 3 slides on 5
// of every 6 layers, Gemma 2 on even layers), none without a sliding window; the attention scale is
// <arch>.attention.query_pre_attn_scalar^-0.5 when given, else llama.cpp's head_dim^-0.5, or
// (hidden / heads)^-0.5 for the 27B shapes. Norm weights are stored as w + 1.
gemma::Config config_from_gguf(const formats::GgufFile& file);

// The file's tensors as `views_of` presents each: (name a model binds, view) pairs, one for most tensors,
// several for the parts of a stacked one; the views point into the file and keep the file's names.
using TensorViews = std::function<std::vector<std::pair<std::string, Tensor>>(const Tensor&)>;
std::unique_ptr<TensorSource> tensor_views(std::unique_ptr<formats::GgufFile> file, const TensorViews& views_of);

// The file's tensors under the names `name_of` gives them (it throws for a name it cannot place).
std::unique_ptr<TensorSource> renamed_tensors(std::unique_ptr<formats::GgufFile> file,
                                              const std::function<std::string(const std::string&)>& name_of);

// The file's tensors under the names the model binds ("model.layers.3.mlp.up_proj.weight" for
// "blk.3.ffn_up.weight"); throws for a tensor name it cannot place.
std::unique_ptr<TensorSource> hf_named_tensors(std::unique_ptr<formats::GgufFile> file, gemma::Family family);

// Gemma 3n (arch gemma3n, as `gemma convert` writes it): the config from llama.cpp's keys (plus Ollama's
// altup.correct_scale), and the tensors under the Hugging Face names of Gemma3nForCausalLM ("model."), the
// stacked altup_proj / altup_unembd_proj split into their n - 1 matrices.
gemma3n::Config gemma3n_config_from_gguf(const formats::GgufFile& file);
std::unique_ptr<TensorSource> gemma3n_hf_named_tensors(std::unique_ptr<formats::GgufFile> file);

// Gemma 4 (arch gemma4, as llama.cpp's converter and `gemma convert` write it): the config from llama.cpp's keys,
// each layer's head width, KV heads and MLP width by its kind; the full layers' RoPE from the rope_freqs factors
// (one factor for the rotated pairs, 1e30 for those left alone); K = V on full layers that have no attn_v. The
// image, audio and video placeholders are the tokenizer's <|image|>, <|audio|> and <|video|>.
gemma4::Config gemma4_config_from_gguf(const formats::GgufFile& file, const Tokenizer& tokenizer);
// Gemma 4's tensors under the Hugging Face names of Gemma4ForCausalLM ("model.").
std::unique_ptr<TensorSource> gemma4_hf_named_tensors(std::unique_ptr<formats::GgufFile> file);

// tokenizer.ggml.model "llama" (SentencePiece) or "gemma4" (BPE with tokenizer.ggml.merges).
Tokenizer tokenizer_from_gguf(const formats::GgufFile& file);

// Ids that end generation, as generation_config.json's eos_token_id would: the eos id, and the eot id
// when the file names one (Gemma 1/2 conversions do); for Gemma 4 also <turn|> and <|tool_response>, as
// its generation_config.json lists them (and llama.cpp ends on them).
std::vector<int32_t> end_of_generation_ids(const formats::GgufFile& file, const Tokenizer& tokenizer);

}  // namespace ge::loader
