// `gemma convert` for Gemma 3 text checkpoints: the GGUF read back with our reader, checked against
// values computed here from the fixture's own files (config.json, safetensors header, tokenizer files).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>

#include "convert/conversion.h"
#include "convert/gguf_convert.h"
#include "convert_test_util.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "kernels/quantize.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;
using formats::GgufFile;
using nlohmann::json;

constexpr int32_t kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

// The text config as the checkpoint states it (text_config merged over the root for model_type gemma3).
json text_config(const fs::path& dir) {
  json c = test::read_json(dir / "config.json");
  if (c.contains("text_config"))
    for (const auto& [k, v] : c["text_config"].items()) c[k] = v;
  return c;
}

int32_t index_of(const std::vector<std::string>& tokens, const std::string& t) {
  const auto it = std::find(tokens.begin(), tokens.end(), t);
  return it == tokens.end() ? -1 : static_cast<int32_t>(it - tokens.begin());
}

// Which norms a family's layers have: Gemma 1 only the pre-norms, Gemma 2 also the post-norms, Gemma 3
// also the q/k norms.
struct Norms {
  bool sandwich = true;
  bool qk = true;
};

// (GGUF name, checkpoint name) of every norm of a text model.
std::vector<std::pair<std::string, std::string>> norm_names(const std::string& prefix, int64_t layers,
                                                            Norms n) {
  std::vector<std::pair<std::string, std::string>> pairs = {{"output_norm.weight", prefix + "norm.weight"}};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string dst = "blk." + std::to_string(l) + ".",
                      src = prefix + "layers." + std::to_string(l) + ".";
    pairs.push_back({dst + "attn_norm.weight", src + "input_layernorm.weight"});
    if (n.qk) {
      pairs.push_back({dst + "attn_q_norm.weight", src + "self_attn.q_norm.weight"});
      pairs.push_back({dst + "attn_k_norm.weight", src + "self_attn.k_norm.weight"});
    }
    if (n.sandwich) {
      pairs.push_back({dst + "post_attention_norm.weight", src + "post_attention_layernorm.weight"});
      pairs.push_back({dst + "ffn_norm.weight", src + "pre_feedforward_layernorm.weight"});
      pairs.push_back({dst + "post_ffw_norm.weight", src + "post_feedforward_layernorm.weight"});
    } else {
      pairs.push_back({dst + "ffn_norm.weight", src + "post_attention_layernorm.weight"});
    }
  }
  return pairs;
}

// The type a GGUF matrix is expected in, by name.
using MatrixType = std::function<DType(const std::string& gguf_name)>;

// Checks names, shapes and dtypes of every tensor of a Gemma text GGUF against config.json.
void expect_tensors(const GgufFile& g, const json& c, int64_t n_vocab, const MatrixType& matrix,
                    Norms norms = {}) {
  const int64_t hidden = c["hidden_size"], ff = c["intermediate_size"], layers = c["num_hidden_layers"];
  const int64_t hd = c["head_dim"], q = c["num_attention_heads"].get<int64_t>() * hd,
                kv = c["num_key_value_heads"].get<int64_t>() * hd;
  std::map<std::string, std::pair<std::vector<int64_t>, DType>> want;
  const auto add_matrix = [&](const std::string& name, std::vector<int64_t> shape) {
    want[name] = {std::move(shape), matrix(name)};
  };
  add_matrix("token_embd.weight", {n_vocab, hidden});
  want["output_norm.weight"] = {{hidden}, DType::F32};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add_matrix(b + "attn_q.weight", {q, hidden});
    add_matrix(b + "attn_k.weight", {kv, hidden});
    add_matrix(b + "attn_v.weight", {kv, hidden});
    add_matrix(b + "attn_output.weight", {hidden, q});
    add_matrix(b + "ffn_gate.weight", {ff, hidden});
    add_matrix(b + "ffn_up.weight", {ff, hidden});
    add_matrix(b + "ffn_down.weight", {hidden, ff});
  }
  for (const auto& [name, src] : norm_names("", layers, norms)) {
    const bool head = name.find("_q_norm") != std::string::npos || name.find("_k_norm") != std::string::npos;
    want[name] = {{head ? hd : hidden}, DType::F32};
  }
  const int64_t per_layer = 7 + (norms.qk ? 2 : 0) + (norms.sandwich ? 4 : 2);
  ASSERT_EQ(want.size(), static_cast<size_t>(1 + per_layer * layers + 1));
  ASSERT_EQ(g.all().size(), want.size());
  for (const Tensor* t : g.all()) {
    const auto it = want.find(t->name);
    ASSERT_NE(it, want.end()) << "unexpected tensor " << t->name;
    EXPECT_EQ(t->shape, it->second.first) << t->name;
    EXPECT_EQ(t->dtype, it->second.second) << t->name;
  }
}

// Every matrix in one type.
void expect_tensors(const GgufFile& g, const json& c, int64_t n_vocab, DType matrix, Norms norms = {}) {
  expect_tensors(
      g, c, n_vocab, [matrix](const std::string&) { return matrix; }, norms);
}

// Every norm equals the checkpoint's bf16 value + 1, in f32.
void expect_norms_shifted(const GgufFile& g, const formats::SafetensorsCheckpoint& st,
                          const std::string& prefix, int64_t layers, Norms norms = {}) {
  for (const auto& [dst, src] : norm_names(prefix, layers, norms)) {
    const Tensor* out = g.find(dst);
    const Tensor* in = st.find(src);
    ASSERT_TRUE(out && in) << dst;
    ASSERT_EQ(in->dtype, DType::BF16);
    ASSERT_EQ(out->numel(), in->numel());
    for (int64_t i = 0; i < in->numel(); ++i)
      ASSERT_EQ(test::f32_at(out->data + 4 * i), bf16_to_f32(test::u16_at(in->data + 2 * i)) + 1.0f)
          << dst << "[" << i << "]";
  }
}

TEST(Convert, Gemma3TinyBf16MetadataTensorsAndVocab) {
  const fs::path src = test::demo_model_dir();
  test::ScratchDir dir;
  const fs::path out = test::convert_fixture(src, dir.path(), std::nullopt);  // default: checkpoint's bf16
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
  const GgufFile g(out);
  const auto& m = g.metadata();
  const json c = text_config(src);
  const json tc = test::read_json(src / "tokenizer_config.json");

  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(m.get_string("general.architecture"), "gemma3");
  EXPECT_EQ(m.get_string("general.name"), "gemma3-tiny");
  EXPECT_EQ(m.get_u32("general.file_type"), 32u);  // MOSTLY_BF16
  EXPECT_EQ(m.get_u32("general.quantization_version"), 2u);
  EXPECT_EQ(m.get_u32("gemma3.block_count"), c["num_hidden_layers"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.context_length"), c["max_position_embeddings"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.embedding_length"), c["hidden_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.feed_forward_length"), c["intermediate_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.attention.head_count"), c["num_attention_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.attention.head_count_kv"), c["num_key_value_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.attention.key_length"), c["head_dim"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.attention.value_length"), c["head_dim"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.attention.sliding_window"), c["sliding_window"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma3.attention.sliding_window_pattern"),
            c["sliding_window_pattern"].get<uint32_t>());
  EXPECT_EQ(m.value("gemma3.attention.sliding_window_layers"), nullptr);  // only where no period fits
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.attention.query_pre_attn_scalar"),
                  c["query_pre_attn_scalar"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.attention.layer_norm_rms_epsilon"), c["rms_norm_eps"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.rope.freq_base"), c["rope_theta"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.rope.freq_base_swa"), c["rope_local_base_freq"].get<float>());
  EXPECT_EQ(m.value("gemma3.rope.scaling.type"), nullptr);        // rope_scaling is null
  EXPECT_EQ(m.value("gemma3.final_logit_softcapping"), nullptr);  // null in config.json

  // Vocabulary (tokenizer.model): one token per embedding row the config declares.
  EXPECT_EQ(m.get_string("tokenizer.ggml.model"), "llama");
  const auto& tokens = m.get_array<std::string>("tokenizer.ggml.tokens");
  const auto& scores = m.get_array<float>("tokenizer.ggml.scores");
  const auto& types = m.get_array<int32_t>("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), c["vocab_size"].get<size_t>());
  ASSERT_EQ(scores.size(), tokens.size());
  ASSERT_EQ(types.size(), tokens.size());
  EXPECT_EQ(tokens[2], "<bos>");
  EXPECT_EQ(types[2], kControl);
  const int32_t byte_a = index_of(tokens, "<0x41>");
  ASSERT_GE(byte_a, 0);
  EXPECT_EQ(types[byte_a], kByte);
  EXPECT_EQ(m.get_u32("tokenizer.ggml.bos_token_id"), 2u);
  EXPECT_EQ(m.get_u32("tokenizer.ggml.eos_token_id"),
            static_cast<uint32_t>(index_of(tokens, tc["eos_token"])));
  EXPECT_EQ(m.get_u32("tokenizer.ggml.padding_token_id"),
            static_cast<uint32_t>(index_of(tokens, tc["pad_token"])));
  EXPECT_EQ(m.get_u32("tokenizer.ggml.unknown_token_id"),
            static_cast<uint32_t>(index_of(tokens, tc["unk_token"])));
  EXPECT_EQ(m.get_bool("tokenizer.ggml.add_bos_token"), tc["add_bos_token"].get<bool>());
  EXPECT_EQ(m.get_bool("tokenizer.ggml.add_eos_token"), tc["add_eos_token"].get<bool>());
  EXPECT_EQ(m.get_string("tokenizer.chat_template"), tc["chat_template"].get<std::string>());

  const formats::SafetensorsCheckpoint st(src);
  expect_tensors(g, c, c["vocab_size"], DType::BF16);
  expect_norms_shifted(g, st, "model.", c["num_hidden_layers"]);
  // Matrices keep the checkpoint's bf16 bytes.
  for (const auto& [dst, srcname] : std::vector<std::pair<std::string, std::string>>{
           {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"},
           {"token_embd.weight", "model.embed_tokens.weight"}}) {
    const Tensor* a = g.find(dst);
    const Tensor* b = st.find(srcname);
    ASSERT_EQ(a->nbytes, b->nbytes);
    EXPECT_EQ(std::memcmp(a->data, b->data, a->nbytes), 0) << dst;
  }
}

TEST(Convert, Gemma3TinyRopeF32WritesScalingSoftcapAndWidenedFloats) {
  const fs::path src = test::fixture_model_dir("gemma3-tiny-rope");
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), convert::OutType::F32));
  const auto& m = g.metadata();
  const json c = text_config(src);
  EXPECT_EQ(m.get_u32("general.file_type"), 0u);  // ALL_F32
  EXPECT_EQ(m.get_string("gemma3.rope.scaling.type"), "linear");
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.rope.scaling.factor"), c["rope_scaling"]["factor"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.final_logit_softcapping"), c["final_logit_softcapping"].get<float>());
  expect_tensors(g, c, c["vocab_size"], DType::F32);
  const formats::SafetensorsCheckpoint st(src);
  expect_norms_shifted(g, st, "model.", c["num_hidden_layers"]);
  const Tensor* a = g.find("blk.5.attn_q.weight");
  const Tensor* b = st.find("model.layers.5.self_attn.q_proj.weight");
  ASSERT_EQ(a->numel(), b->numel());
  for (int64_t i = 0; i < a->numel(); ++i)
    ASSERT_EQ(test::f32_at(a->data + 4 * i), bf16_to_f32(test::u16_at(b->data + 2 * i))) << i;
}

// The keys every Gemma family writes from config.json, under its architecture's prefix.
void expect_common_hyperparameters(const formats::GgufMetadata& m, const std::string& arch, const json& c) {
  const std::string a = arch + ".";
  EXPECT_EQ(m.get_string("general.architecture"), arch);
  EXPECT_EQ(m.get_u32(a + "block_count"), c["num_hidden_layers"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "context_length"), c["max_position_embeddings"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "embedding_length"), c["hidden_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "feed_forward_length"), c["intermediate_size"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "attention.head_count"), c["num_attention_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "attention.head_count_kv"), c["num_key_value_heads"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "attention.key_length"), c["head_dim"].get<uint32_t>());
  EXPECT_EQ(m.get_u32(a + "attention.value_length"), c["head_dim"].get<uint32_t>());
  EXPECT_FLOAT_EQ(m.get_f32(a + "attention.layer_norm_rms_epsilon"), c["rms_norm_eps"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32(a + "rope.freq_base"), c["rope_theta"].get<float>());
}

// Ollama's constants (and llama.cpp's for Gemma 1), whatever the vocabulary.
void expect_fim_ids(const formats::GgufMetadata& m) {
  EXPECT_EQ(m.get_u32("tokenizer.ggml.prefix_token_id"), 67u);
  EXPECT_EQ(m.get_u32("tokenizer.ggml.suffix_token_id"), 69u);
  EXPECT_EQ(m.get_u32("tokenizer.ggml.middle_token_id"), 68u);
  EXPECT_EQ(m.get_u32("tokenizer.ggml.eot_token_id"), 107u);
}

TEST(Convert, Gemma1TinyFimIdsPreNormsOnlyAndNoSlidingWindow) {
  const fs::path src = test::fixture_model_dir("gemma-tiny");
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), std::nullopt));
  const auto& m = g.metadata();
  const json c = test::read_json(src / "config.json");
  expect_common_hyperparameters(m, "gemma", c);
  expect_fim_ids(m);
  EXPECT_EQ(m.get_u32("tokenizer.ggml.fsep_token_id"), 70u);  // llama.cpp's GemmaModel
  EXPECT_EQ(m.value("gemma.attention.sliding_window"), nullptr);
  EXPECT_EQ(m.value("gemma.final_logit_softcapping"), nullptr);
  EXPECT_EQ(m.value("gemma.attention.sliding_window_pattern"), nullptr);  // no sliding layers
  EXPECT_EQ(m.value("gemma.attention.query_pre_attn_scalar"), nullptr);   // always head_dim
  EXPECT_EQ(m.get_array<std::string>("tokenizer.ggml.tokens").size(), c["vocab_size"].get<size_t>());
  const Norms pre_only{.sandwich = false, .qk = false};
  expect_tensors(g, c, c["vocab_size"], DType::BF16, pre_only);
  const formats::SafetensorsCheckpoint st(src);
  expect_norms_shifted(g, st, "model.", c["num_hidden_layers"], pre_only);
}

TEST(Convert, Gemma2TinySoftCapsSlidingWindowAndFourNormsShifted) {
  const fs::path src = test::fixture_model_dir("gemma2-tiny");
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), convert::OutType::F32));
  const auto& m = g.metadata();
  const json c = test::read_json(src / "config.json");
  expect_common_hyperparameters(m, "gemma2", c);
  expect_fim_ids(m);
  EXPECT_EQ(m.value("tokenizer.ggml.fsep_token_id"), nullptr);
  EXPECT_FLOAT_EQ(m.get_f32("gemma2.attn_logit_softcapping"), c["attn_logit_softcapping"].get<float>());
  EXPECT_FLOAT_EQ(m.get_f32("gemma2.final_logit_softcapping"), c["final_logit_softcapping"].get<float>());
  EXPECT_EQ(m.get_u32("gemma2.attention.sliding_window"), c["sliding_window"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma2.attention.sliding_window_pattern"), 2u);  // even layers slide
  EXPECT_FLOAT_EQ(m.get_f32("gemma2.attention.query_pre_attn_scalar"),
                  c["query_pre_attn_scalar"].get<float>());
  EXPECT_EQ(m.value("gemma2.rope.freq_base_swa"), nullptr);
  const Norms sandwich{.sandwich = true, .qk = false};
  expect_tensors(g, c, c["vocab_size"], DType::F32, sandwich);
  const formats::SafetensorsCheckpoint st(src);
  expect_norms_shifted(g, st, "model.", c["num_hidden_layers"], sandwich);
}

TEST(Convert, Gemma3VisionTextPartF16PadsTheVocabularyToTheEmbeddingRows) {
  const fs::path src = test::fixture_model_dir("gemma3-tiny-vision");
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), convert::OutType::F16));
  const auto& m = g.metadata();
  const json c = text_config(src);
  EXPECT_EQ(m.get_u32("general.file_type"), 1u);  // MOSTLY_F16
  // Sparse text_config: transformers' defaults, as llama.cpp's converter fills them in.
  EXPECT_EQ(m.get_u32("gemma3.context_length"), 131072u);
  EXPECT_FLOAT_EQ(m.get_f32("gemma3.rope.freq_base"), 1e6f);
  EXPECT_EQ(m.get_u32("gemma3.attention.sliding_window"), c["sliding_window"].get<uint32_t>());
  const auto& tokens = m.get_array<std::string>("tokenizer.ggml.tokens");
  const auto& types = m.get_array<int32_t>("tokenizer.ggml.token_type");
  const auto n_vocab = c["vocab_size"].get<size_t>();  // 1088 embedding rows
  ASSERT_EQ(tokens.size(), n_vocab);
  EXPECT_EQ(tokens[1024], "<image_soft_token>");
  EXPECT_TRUE(types[1024] == kControl || types[1024] == kUserDefined);
  EXPECT_EQ(tokens[1025], "[PAD1025]");
  EXPECT_EQ(types[1087], kUnused);
  expect_tensors(g, c, static_cast<int64_t>(n_vocab), DType::F16);  // no vision tower tensors
  const formats::SafetensorsCheckpoint st(src);
  expect_norms_shifted(g, st, "language_model.model.", c["num_hidden_layers"]);
  const Tensor* a = g.find("blk.0.ffn_down.weight");
  const Tensor* b = st.find("language_model.model.layers.0.mlp.down_proj.weight");
  for (int64_t i = 0; i < a->numel(); ++i)
    ASSERT_EQ(test::u16_at(a->data + 2 * i), f32_to_f16(bf16_to_f32(test::u16_at(b->data + 2 * i)))) << i;
}

// A quantized conversion: its file type, every matrix in the block type (norms f32), and the bytes of
// one layer matrix and of the vocabulary-cut embedding equal the quantizer applied to the widened bf16
// source rows.
void expect_quantized(convert::OutType type, uint32_t file_type, DType matrix,
                      void (*quantize)(const float*, int64_t, std::byte*)) {
  const fs::path src = test::demo_model_dir();
  test::ScratchDir dir;
  const GgufFile g(test::convert_fixture(src, dir.path(), type));
  const json c = text_config(src);
  EXPECT_EQ(g.metadata().get_u32("general.file_type"), file_type);
  expect_tensors(g, c, c["vocab_size"], matrix);
  const formats::SafetensorsCheckpoint st(src);
  expect_norms_shifted(g, st, "model.", c["num_hidden_layers"]);
  const std::pair<const char*, const char*> matrices[] = {
      {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"},
      {"token_embd.weight", "model.embed_tokens.weight"}};
  for (const auto& [dst, src_name] : matrices) {
    const Tensor* out = g.find(dst);
    const Tensor* in = st.find(src_name);
    ASSERT_TRUE(out && in) << dst;
    ASSERT_EQ(in->dtype, DType::BF16);
    const int64_t n = out->numel();
    std::vector<float> widened(n);
    for (int64_t i = 0; i < n; ++i) widened[i] = bf16_to_f32(test::u16_at(in->data + 2 * i));
    std::vector<std::byte> want(*dtype_bytes(matrix, n));
    quantize(widened.data(), n, want.data());
    ASSERT_EQ(out->nbytes, want.size()) << dst;
    EXPECT_EQ(std::memcmp(out->data, want.data(), want.size()), 0) << dst;
  }
}

TEST(Convert, Gemma3TinyQ8_0QuantizesEveryMatrix) {
  expect_quantized(convert::OutType::Q8_0, 7u, DType::Q8_0, kernels::quantize_row_q8_0);  // MOSTLY_Q8_0
}

TEST(Convert, Gemma3TinyQ4_0QuantizesEveryMatrix) {
  expect_quantized(convert::OutType::Q4_0, 2u, DType::Q4_0, kernels::quantize_row_q4_0);  // MOSTLY_Q4_0
}

// llama-quantize's mixes, as it types a Gemma's matrices (llama_tensor_get_type; written out here by hand
// for each fixture): token_embd (tied: it is the output matrix) Q6_K, attn_v and ffn_down Q6_K on the
// layers use_more_bits picks (q4_k_m, q5_k_m), the other matrices the base type; rows that are not whole
// 256-value blocks fall back to a 32-value type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K and the output -> Q8_0).
struct MixCase {
  std::string name;
  fs::path checkpoint;
  convert::OutType mix;
  uint32_t file_type;
  DType embedding, more_bits, other;
  std::set<int> more_bits_layers;
};

DType expected_mix_type(const MixCase& m, const std::string& name) {
  if (name == "token_embd.weight") return m.embedding;
  int layer = -1;
  char kind[32] = {};
  if (std::sscanf(name.c_str(), "blk.%d.%31[a-z_]", &layer, kind) == 2 &&
      (std::string(kind) == "attn_v" || std::string(kind) == "ffn_down") && m.more_bits_layers.count(layer))
    return m.more_bits;
  return m.other;
}

std::vector<MixCase> mix_cases() {
  // gemma3-tiny: 8 layers (use_more_bits: 0, 3, 6, 7), rows of 64 (hidden) or 128 (MLP, q heads): every
  // matrix falls back. gemma3-256: 2 layers (use_more_bits: 1), every row 256 long.
  const fs::path tiny = test::demo_model_dir(), k256 = test::data_dir() / "gguf-types" / "gemma3-256";
  const std::set<int> tiny_layers = {0, 3, 6, 7}, k256_layers = {1};
  using convert::OutType;
  return {
      {"gemma3-tiny q4_k_m", tiny, OutType::Q4_K_M, 15, DType::Q8_0, DType::Q8_0, DType::Q5_0, tiny_layers},
      {"gemma3-tiny q5_k_m", tiny, OutType::Q5_K_M, 17, DType::Q8_0, DType::Q8_0, DType::Q5_1, tiny_layers},
      {"gemma3-tiny q6_k", tiny, OutType::Q6_K, 18, DType::Q8_0, DType::Q8_0, DType::Q8_0, tiny_layers},
      {"gemma3-256 q4_k_m", k256, OutType::Q4_K_M, 15, DType::Q6_K, DType::Q6_K, DType::Q4_K, k256_layers},
      {"gemma3-256 q5_k_m", k256, OutType::Q5_K_M, 17, DType::Q6_K, DType::Q6_K, DType::Q5_K, k256_layers},
      {"gemma3-256 q6_k", k256, OutType::Q6_K, 18, DType::Q6_K, DType::Q6_K, DType::Q6_K, k256_layers},
  };
}

// Each mix: the file type, each matrix's type (norms f32), and the bytes of a matrix of each type equal
// the block quantizer of that type applied to the widened bf16 source (the quantizers are checked
// bit-exact against ggml's in quantize_test).
TEST(Convert, QuantMixesTypeEachMatrixAsLlamaQuantize) {
  for (const MixCase& m : mix_cases()) {
    SCOPED_TRACE(m.name);
    test::ScratchDir dir;
    const GgufFile g(test::convert_fixture(m.checkpoint, dir.path(), m.mix));
    const json c = text_config(m.checkpoint);
    EXPECT_EQ(g.metadata().get_u32("general.file_type"), m.file_type);
    expect_tensors(g, c, c["vocab_size"],
                   [&](const std::string& name) { return expected_mix_type(m, name); });
    const formats::SafetensorsCheckpoint st(m.checkpoint);
    expect_norms_shifted(g, st, "model.", c["num_hidden_layers"]);
    const std::pair<const char*, const char*> matrices[] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight"},
        {"blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight"}};
    for (const auto& [dst, src_name] : matrices) {
      const Tensor* out = g.find(dst);
      const Tensor* in = st.find(src_name);
      ASSERT_TRUE(out && in) << dst;
      const int64_t n = out->numel();
      std::vector<float> widened(n);
      for (int64_t i = 0; i < n; ++i) widened[i] = bf16_to_f32(test::u16_at(in->data + 2 * i));
      std::vector<std::byte> want(*dtype_bytes(out->dtype, n));
      kernels::quantize_blocks(out->dtype, widened.data(), n, want.data());
      ASSERT_EQ(out->nbytes, want.size()) << dst;
      EXPECT_EQ(std::memcmp(out->data, want.data(), want.size()), 0)
          << dst << " as " << dtype_info(out->dtype).name;
    }
  }
}

// The mix rule by itself, on layer counts and tensors the fixtures lack.
TEST(QuantMix, FollowsLlamaQuantizesRules) {
  using convert::OutType;
  const auto type = [](OutType mix, const convert::MixModel& model, const std::string& name,
                       std::vector<int64_t> shape) { return convert::mix_type(mix, model, name, shape); };
  // 26 layers (Gemma 3 1B's count): use_more_bits(i, 26) = i < 3 || i >= 22 || (i - 3) % 3 == 2. Rows of
  // 2560 (Gemma 3 4B's hidden size), whole 256-value blocks.
  const convert::MixModel l26{.layers = 26, .attn_v_tensors = 26, .tied_embeddings = true};
  const std::set<int> more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 22, 23, 24, 25};
  for (int l = 0; l < 26; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const DType want = more.count(l) ? DType::Q6_K : DType::Q4_K;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "attn_v.weight", {256, 2560}), want) << l;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "ffn_down.weight", {2560, 10240}), want) << l;
    EXPECT_EQ(type(OutType::Q5_K_M, l26, b + "ffn_down.weight", {2560, 10240}),
              more.count(l) ? DType::Q6_K : DType::Q5_K)
        << l;
    EXPECT_EQ(type(OutType::Q6_K, l26, b + "attn_v.weight", {256, 2560}), DType::Q6_K) << l;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "attn_q.weight", {2048, 2560}), DType::Q4_K) << l;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "attn_output.weight", {2560, 2048}), DType::Q4_K) << l;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "ffn_gate.weight", {10240, 2560}), DType::Q4_K) << l;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "attn_norm.weight", {2560}), std::nullopt) << l;
    EXPECT_EQ(type(OutType::Q4_K_M, l26, b + "attn_q_norm.weight", {256}), std::nullopt) << l;
  }
  // Gemma 3 1B's hidden size 1152 is 4.5 blocks of 256: its matrices with rows of 1152 fall back (its
  // ffn_down, rows of 6912 = 27 blocks, does not), as in llama.cpp's own Q4_K_M of that model.
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.4.attn_q.weight", {1024, 1152}), DType::Q5_0);
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.5.attn_v.weight", {256, 1152}), DType::Q8_0);
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.4.attn_v.weight", {256, 1152}), DType::Q5_0);
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.4.ffn_down.weight", {1152, 6912}), DType::Q4_K);
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "token_embd.weight", {262144, 1152}), DType::Q8_0);
  // Tied embedding = the output matrix: Q6_K for every mix; Q8_0 when its rows are not whole 256-blocks.
  for (OutType mix : {OutType::Q4_K_M, OutType::Q5_K_M, OutType::Q6_K}) {
    EXPECT_EQ(type(mix, l26, "token_embd.weight", {262144, 2560}), DType::Q6_K);
    EXPECT_EQ(type(mix, l26, "token_embd.weight", {1024, 640}), DType::Q8_0);
    EXPECT_EQ(type(mix, l26, "token_embd.weight", {1024, 80}), DType::F16);  // not even 32-blocks
  }
  // An untied output: token_embd takes the base type, output.weight Q6_K.
  const convert::MixModel untied{.layers = 34, .attn_v_tensors = 34, .tied_embeddings = false};
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "token_embd.weight", {1024, 2560}), DType::Q4_K);
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "output.weight", {1024, 2560}), DType::Q6_K);
  // use_more_bits(i, 34) = i < 4 || i >= 29 || (i - 4) % 3 == 2.
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "blk.3.attn_v.weight", {1024, 2560}), DType::Q6_K);
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "blk.4.attn_v.weight", {1024, 2560}), DType::Q4_K);
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "blk.6.attn_v.weight", {1024, 2560}), DType::Q6_K);
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "blk.28.ffn_down.weight", {2560, 10240}), DType::Q4_K);
  EXPECT_EQ(type(OutType::Q4_K_M, untied, "blk.29.ffn_down.weight", {2560, 10240}), DType::Q6_K);
  // Fallbacks for rows that are not whole 256-value blocks, then F16 where 32-value blocks do not fit.
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.4.attn_q.weight", {128, 96}), DType::Q5_0);
  EXPECT_EQ(type(OutType::Q5_K_M, l26, "blk.4.attn_q.weight", {128, 96}), DType::Q5_1);
  EXPECT_EQ(type(OutType::Q6_K, l26, "blk.4.attn_q.weight", {128, 96}), DType::Q8_0);
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.0.attn_v.weight", {128, 96}), DType::Q8_0);
  EXPECT_EQ(type(OutType::Q4_K_M, l26, "blk.4.attn_q.weight", {128, 80}), DType::F16);
  // gemma3n: the per-layer embedding is a token embedding (tied: Q6_K); AltUp, LAuReL and the per-layer
  // model projection stay as they are; the per-layer gate and projection take the base type.
  const convert::MixModel g3n{.layers = 30, .attn_v_tensors = 30, .tied_embeddings = true};
  EXPECT_EQ(type(OutType::Q4_K_M, g3n, "per_layer_token_embd.weight", {262144, 7680}), DType::Q6_K);
  for (const char* kept :
       {"per_layer_model_proj.weight", "altup_proj.weight", "blk.2.altup_router.weight",
        "blk.2.altup_predict_coef.weight", "blk.2.laurel_l.weight", "blk.2.laurel_r.weight"})
    EXPECT_EQ(type(OutType::Q4_K_M, g3n, kept, {2048, 2048}), std::nullopt) << kept;
  EXPECT_EQ(type(OutType::Q4_K_M, g3n, "blk.2.inp_gate.weight", {256, 2048}), DType::Q4_K);
  EXPECT_EQ(type(OutType::Q4_K_M, g3n, "blk.2.proj.weight", {2048, 256}), DType::Q4_K);
}

// llama-quantize has no mix for projectors: the mmproj file of a mix is written as for f16.
TEST(Convert, MmprojOfAQuantMixIsF16) {
  const fs::path src = test::data_dir() / "gemma3-tiny-vision";
  test::ScratchDir dir;
  const fs::path mix = dir.path() / "mix.gguf", f16 = dir.path() / "f16.gguf";
  const auto r =
      convert::convert_mmproj_to_gguf(src, mix, {.out_type = convert::OutType::Q4_K_M, .progress = {}});
  convert::convert_mmproj_to_gguf(src, f16, {.out_type = convert::OutType::F16, .progress = {}});
  EXPECT_EQ(r.out_type, convert::OutType::F16);
  EXPECT_EQ(test::read_bytes(mix), test::read_bytes(f16));
}

// intermediate_size 80 makes ffn_down's rows 80 long, not whole 32-weight blocks: as llama.cpp, that
// matrix falls back to f16 while ffn_gate/ffn_up (rows of hidden_size 64) are quantized. The checkpoint
// keeps its data; each MLP tensor's header entry is cut to a prefix of its old bytes.
TEST(Convert, Q8_0WritesARowLengthNotAMultipleOf32AsF16) {
  test::ScratchDir dir;
  const fs::path src = dir.path() / "ckpt";
  fs::create_directories(src);
  test::copy_files(test::demo_model_dir(), src);
  json c = test::read_json(src / "config.json");
  const int64_t ff = 80, hidden = c["hidden_size"];
  c["intermediate_size"] = ff;
  std::ofstream(src / "config.json") << c.dump(2);
  test::edit_safetensors_header(src / "model.safetensors", [&](json& h) {
    for (auto& [name, entry] : h.items()) {
      if (name.find(".mlp.") == std::string::npos) continue;
      entry["shape"] = name.ends_with("down_proj.weight") ? json{hidden, ff} : json{ff, hidden};
      entry["data_offsets"][1] = entry["data_offsets"][0].get<int64_t>() + ff * hidden * 2;
    }
  });
  const GgufFile g(test::convert_fixture(src, dir.path(), convert::OutType::Q8_0));
  EXPECT_EQ(g.find("blk.0.ffn_gate.weight")->dtype, DType::Q8_0);
  EXPECT_EQ(g.find("blk.0.ffn_up.weight")->dtype, DType::Q8_0);
  const Tensor* out = g.find("blk.0.ffn_down.weight");
  ASSERT_EQ(out->dtype, DType::F16);
  const formats::SafetensorsCheckpoint st(src);
  const Tensor* in = st.find("model.layers.0.mlp.down_proj.weight");
  ASSERT_EQ(out->numel(), in->numel());
  for (int64_t i = 0; i < in->numel(); ++i)
    ASSERT_EQ(test::u16_at(out->data + 2 * i), f32_to_f16(bf16_to_f32(test::u16_at(in->data + 2 * i)))) << i;
}

TEST(Convert, TokenizerJsonOnlyGivesTheSameVocabularyWithMergeRankScores) {
  test::ScratchDir dir;
  const fs::path src = dir.path() / "ckpt";
  fs::create_directories(src);
  test::copy_files(test::demo_model_dir(), src);
  const GgufFile with_model(test::convert_fixture(src, dir.path() / "", std::nullopt));
  const auto sp_tokens = with_model.metadata().get_array<std::string>("tokenizer.ggml.tokens");
  const auto sp_types = with_model.metadata().get_array<int32_t>("tokenizer.ggml.token_type");

  fs::remove(src / "tokenizer.model");
  const fs::path out2 = dir.path() / "json.gguf";
  convert::convert_to_gguf(src, out2);
  const GgufFile g(out2);
  const auto& tokens = g.metadata().get_array<std::string>("tokenizer.ggml.tokens");
  const auto& scores = g.metadata().get_array<float>("tokenizer.ggml.scores");
  const auto& types = g.metadata().get_array<int32_t>("tokenizer.ggml.token_type");
  EXPECT_EQ(tokens, sp_tokens);
  EXPECT_EQ(types, sp_types);

  // The score of a merged piece is minus the rank of the first merge that forms it.
  const json tj = test::read_json(src / "tokenizer.json");
  const auto& merges = tj["model"]["merges"];
  ASSERT_GT(merges.size(), 10u);
  std::set<std::string> seen;
  int checked = 0;
  for (size_t r = 0; r < merges.size() && checked < 20; ++r) {
    const std::string formed = merges[r][0].get<std::string>() + merges[r][1].get<std::string>();
    if (!seen.insert(formed).second) continue;
    const int32_t id = index_of(tokens, formed);
    ASSERT_GE(id, 0) << formed;
    EXPECT_EQ(scores[id], -static_cast<float>(r)) << formed;
    ++checked;
  }
  EXPECT_EQ(scores[index_of(tokens, "<0x41>")], 0.0f);  // no merge forms a byte piece
}

// A copy of the demo checkpoint to break.
struct BrokenCopy : test::CheckpointCopy {
  BrokenCopy() : CheckpointCopy(test::demo_model_dir()) {}
};

TEST(Convert, MissingConfigIsAClearError) {
  BrokenCopy b;
  fs::remove(b.src / "config.json");
  const std::string err = b.convert_error();
  EXPECT_NE(err.find("config.json"), std::string::npos) << err;
  EXPECT_NE(err.find("not found"), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

TEST(Convert, UnknownModelTypeIsAClearError) {
  BrokenCopy b;
  json c = test::read_json(b.src / "config.json");
  c["model_type"] = "llama";
  std::ofstream(b.src / "config.json") << c.dump(2);
  const std::string err = b.convert_error();
  EXPECT_NE(err.find("model_type 'llama' is not supported"), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

TEST(Convert, MissingTensorIsAClearErrorAndLeavesNoFile) {
  BrokenCopy b;
  // Rename one tensor in the safetensors header (same length, so every offset stays valid).
  auto bytes = test::read_bytes(b.src / "model.safetensors");
  const std::string from = "model.layers.3.self_attn.q_proj.weight",
                    to = "model.layers.3.self_attn.q_proj.WEIGHT";
  std::string_view header(bytes.data(), std::min<size_t>(bytes.size(), 1 << 20));
  const size_t pos = header.find("\"" + from + "\"");
  ASSERT_NE(pos, std::string_view::npos);
  std::memcpy(bytes.data() + pos + 1, to.data(), to.size());
  test::write_bytes(b.src / "model.safetensors", bytes);
  const std::string err = b.convert_error();
  EXPECT_NE(err.find("'" + from + "' is missing"), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

TEST(Convert, ExtraTensorIsRefusedRatherThanDropped) {
  BrokenCopy b;
  json c = test::read_json(b.src / "config.json");
  c["num_hidden_layers"] = 7;  // layer 7's tensors are now unexpected
  std::ofstream(b.src / "config.json") << c.dump(2);
  const std::string err = b.convert_error();
  EXPECT_NE(err.find("model.layers.7."), std::string::npos) << err;
  EXPECT_TRUE(b.output_dir_empty());
}

TEST(Convert, UnwritableOutputIsAClearErrorAndLeavesNoFile) {
  BrokenCopy b;
  fs::path out_dir = b.dir.path() / "readonly";
  fs::create_directories(out_dir);
  fs::permissions(out_dir, fs::perms::owner_read | fs::perms::owner_exec);
  if (geteuid() == 0) {
    // root writes anywhere: use a "directory" that is a regular file instead.
    out_dir = b.dir.path() / "a-file";
    std::ofstream(out_dir) << "x";
  }
  b.out = out_dir / "model.gguf";
  const std::string err = b.convert_error();
  EXPECT_NE(err.find("model.gguf.tmp"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot open for writing"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(b.out));
  EXPECT_FALSE(fs::exists(b.out.string() + ".tmp"));
  fs::permissions(b.dir.path() / "readonly", fs::perms::owner_all);
}

int run(const std::string& args, std::string& output) {
  const std::string cmd = std::string(GE_GEMMA_BIN) + " " + args + " 2>&1 </dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  output.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) output.append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// llama-quantize's spelling is accepted too; a bad --outtype lists the choices.
TEST(ConvertCli, AcceptsTheQuantMixesAndListsTheChoices) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "m.gguf";
  std::string output;
  EXPECT_EQ(
      run("convert '" + test::demo_model_dir().string() + "' -o '" + out.string() + "' --outtype Q4_K_M",
          output),
      0)
      << output;
  EXPECT_EQ(GgufFile(out).metadata().get_u32("general.file_type"), 15u);  // MOSTLY_Q4_K_M
  EXPECT_EQ(run("convert '" + test::demo_model_dir().string() + "' -o '" + out.string() + "' --outtype q4_k",
                output),
            1);
  EXPECT_NE(output.find("q4_k_m, q5_k_m, q6_k"), std::string::npos) << output;
}

TEST(ConvertCli, QuietWhenNotATerminalAndFailsOnABadOuttype) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "m.gguf";
  std::string output;
  EXPECT_EQ(run("convert '" + test::demo_model_dir().string() + "' -o '" + out.string() + "' --outtype f16",
                output),
            0)
      << output;
  EXPECT_EQ(output, "");
  EXPECT_EQ(GgufFile(out).metadata().get_u32("general.file_type"), 1u);
  EXPECT_EQ(run("convert '" + test::demo_model_dir().string() + "' -o '" + out.string() + "' --outtype q4_0",
                output),
            0)
      << output;
  EXPECT_EQ(GgufFile(out).metadata().get_u32("general.file_type"), 2u);  // MOSTLY_Q4_0

  const fs::path out2 = dir.path() / "q.gguf";
  EXPECT_EQ(run("convert '" + test::demo_model_dir().string() + "' -o '" + out2.string() + "' --outtype q3",
                output),
            1);
  EXPECT_NE(output.find("--outtype: 'q3'"), std::string::npos) << output;
  EXPECT_FALSE(fs::exists(out2));
}

}  // namespace
}  // namespace ge
