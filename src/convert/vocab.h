// The tokenizer's vocabulary as GGUF "llama" (SentencePiece) metadata, as llama.cpp's converter writes it:
// from tokenizer.model when present, else from tokenizer.json (score = -merge rank), padded with [PADn]
// to the model's vocabulary size; special token ids, add_bos/add_eos and the chat template.
#pragma once
#include <cstdint>

#include "convert/conversion.h"

namespace ge::convert {

// Writes tokenizer.ggml.* and tokenizer.chat_template for a vocabulary of n_vocab ids (the model's
// vocab_size). Returns the tokens written, for callers that need ids of named tokens.
std::vector<std::string> add_vocabulary(formats::GgufWriter& w, const Checkpoint& ckpt, int64_t n_vocab);

// Gemma 4's tokenizer.json as llama.cpp's converter writes it (tokenizer.ggml.model "gemma4"): the BPE
// pieces by id with their merges; special added tokens control, other added tokens user-defined.
std::vector<std::string> add_bpe_vocabulary(formats::GgufWriter& w, const Checkpoint& ckpt, int64_t n_vocab);

}  // namespace ge::convert
