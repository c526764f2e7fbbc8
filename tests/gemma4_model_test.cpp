// Gemma 4's text decoder (dense and mixture-of-experts) against the float64 reference (tools/ref_gemma4.py, transformers' semantics):
// the resolved per-layer geometry, logits at every position, the residual stream after every layer, chunked
// prefill against stepwise decoding (across the window and the KV-shared layers), batched decode; the GGUF
// files `gemma convert` writes (llama.cpp's keys and tensors), read back with the folder's logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <set>

#include "convert/gguf_convert.h"
#include "formats/gguf.h"
#include "gguf_edit.h"
#include "kernels/thread_pool.h"
#include "loader/gguf_model.h"
#include "loader/model_loader.h"
#include "formats/safetensors.h"
#include "mlx_copy.h"
#include "models/gemma4/model.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

// The dense E2B-like fixture and the 26B-A4B-like one (8 experts, top 2, K=V on its full layers, no PLE).
class Gemma4Fixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path fixture() const { return test::data_dir() / GetParam(); }
  nlohmann::json reference() const { return test::read_json(fixture() / "reference.json"); }
  std::vector<int32_t> reference_ids() const { return reference()["token_ids"].get<std::vector<int32_t>>(); }
};

std::vector<float> all_logits(models::CausalLM& model, const std::vector<int32_t>& ids, bool stepwise = false) {
  kernels::ThreadPool pool(2);
  const int64_t vocab = model.shape().vocab_size;
  auto cache = model.make_cache(static_cast<int64_t>(ids.size()));
  std::vector<float> logits(ids.size() * vocab);
  if (!stepwise) {
    model.forward(ids, 0, cache, pool, logits.data(), true);
    return logits;
  }
  for (size_t t = 0; t < ids.size(); ++t) {
    const models::DecodeRow row{ids[t], static_cast<int64_t>(t), &cache};
    model.decode(std::span(&row, 1), pool, logits.data() + t * vocab);
  }
  return logits;
}

fs::path convert_fixture(const fs::path& fixture, const fs::path& dir, convert::OutType type) {
  const fs::path file = dir / (std::string(convert::out_type_name(type)) + ".gguf");
  convert::ConvertOptions options;
  options.out_type = type;
  convert::convert_to_gguf(fixture, file, options);
  return file;
}

TEST_P(Gemma4Fixture, PerLayerGeometryIsTheReferences) {
  const auto c = gemma4::resolve_config(test::read_json(fixture() / "config.json"), "config.json");
  const auto ref = reference();
  ASSERT_EQ(c.num_layers, static_cast<int64_t>(ref["layer_types"].size()));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& lc = c.layers[l];
    EXPECT_EQ(lc.sliding, ref["layer_types"][l] == "sliding_attention") << l;
    EXPECT_EQ(lc.head_dim, ref["layer_head_dim"][l].get<int64_t>()) << l;
    EXPECT_EQ(lc.num_kv_heads, ref["layer_num_key_value_heads"][l].get<int64_t>()) << l;
    EXPECT_EQ(lc.k_eq_v, ref["layer_v_is_raw_k"][l].get<bool>()) << l;
    EXPECT_EQ(lc.intermediate_size, ref["layer_intermediate_size"][l].get<int64_t>()) << l;
    const auto& source = ref["kv_shared_layer_source"][l];
    EXPECT_EQ(c.kv_source(l), source.is_null() ? l : source.get<int64_t>()) << l;
    const auto want = ref["rope_inv_freq"][lc.sliding ? "sliding_attention" : "full_attention"].get<std::vector<double>>();
    const auto got = gemma4::rope_inv_freq(lc);
    ASSERT_EQ(got.size(), want.size()) << l;
    for (size_t j = 0; j < want.size(); ++j) EXPECT_NEAR(got[j], want[j], 1e-15) << l << " " << j;
  }
}

TEST(Gemma4Config, DefaultsAreTransformers) {
  const auto c = gemma4::resolve_config(
      nlohmann::json{{"model_type", "gemma4"}, {"text_config", nlohmann::json::object()}}, "config.json");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 2304);
  EXPECT_EQ(c.hidden_size_per_layer_input, 256);
  EXPECT_FALSE(c.final_logit_softcapping);
  for (int64_t l = 0; l < 30; ++l) {
    EXPECT_EQ(c.layers[l].sliding, (l + 1) % 6 != 0) << l;
    EXPECT_EQ(c.layers[l].head_dim, c.layers[l].sliding ? 256 : 512) << l;
  }
  // Full layers: proportional RoPE, a quarter of the pairs rotated, exponents over the whole 512.
  const auto full = gemma4::rope_inv_freq(c.layers[5]);
  ASSERT_EQ(full.size(), 256u);
  EXPECT_EQ(full[0], 1.0);
  EXPECT_NEAR(full[63], std::pow(1e6, -126.0 / 512), 1e-18);
  EXPECT_EQ(full[64], 0.0);
  EXPECT_EQ(c.placeholder_ids, (std::vector<int32_t>{258880, 258884, 258881}));
  // The last layer is global whatever layer_types says.
  nlohmann::json tc = {{"num_hidden_layers", 2}, {"layer_types", {"sliding_attention", "sliding_attention"}}};
  EXPECT_FALSE(gemma4::resolve_config({{"model_type", "gemma4_text"}, {"num_hidden_layers", 2},
                                       {"layer_types", tc["layer_types"]}},
                                      "config.json")
                   .layers[1]
                   .sliding);
}

TEST_P(Gemma4Fixture, LogitsMatchTheFloat64ReferenceAtEveryPosition) {
  auto m = loader::load_model(fixture(), 256);
  EXPECT_STREQ(m.model->family_name(), "gemma4");
  const float d = test::max_abs_diff(all_logits(*m.model, reference_ids()),
                                     test::read_f32(fixture() / "reference_logits.f32"));
  std::printf("%s: max |logit - float64 reference| = %.3g\n", GetParam().c_str(), d);
  EXPECT_LT(d, 1e-3f);
}

// From the folder and from the f32 GGUF `gemma convert` writes.
TEST_P(Gemma4Fixture, ResidualStreamMatchesTheReferenceAfterEveryLayer) {
  test::ScratchDir dir;
  for (const fs::path& path : {fixture(), convert_fixture(fixture(), dir.path(), convert::OutType::F32)}) {
    SCOPED_TRACE(path.string());
    auto m = loader::load_model(path, 256);
    const auto ids = reference_ids();
    const auto n = static_cast<int64_t>(ids.size()), h = m.model->shape().hidden_size;
    const auto hidden = test::read_f32(fixture() / "reference_hidden.f32");
    const int64_t layers = m.model->shape().num_layers;
    ASSERT_EQ(static_cast<int64_t>(hidden.size()), (layers + 1) * n * h);
    int64_t seen = 0;
    const models::HiddenObserver observer = [&](int64_t index, const float* x, int64_t, int64_t rows) {
      ASSERT_EQ(rows, n);
      float d = 0, scale = 1;
      for (int64_t i = 0; i < n * h; ++i) {
        d = std::max(d, std::abs(x[i] - hidden[index * n * h + i]));
        scale = std::max(scale, std::abs(hidden[index * n * h + i]));
      }
      EXPECT_LT(d, 1e-4f * scale) << "after index " << index;
      ++seen;
    };
    kernels::ThreadPool pool(2);
    auto cache = m.model->make_cache(n);
    std::vector<float> logits(m.model->shape().vocab_size);
    m.model->forward(ids, 0, cache, pool, logits.data(), false, &observer);
    EXPECT_EQ(seen, layers + 1);
  }
}

// Window 8 (gemma4-tiny: the last 5 layers reading layers 3 and 4): 24 tokens in chunks of 5 against one at
// a time; on the MoE fixture the rows routed to one expert go through it together in a chunk.
TEST_P(Gemma4Fixture, ChunkedPrefillEqualsStepwiseDecoding) {
  auto m = loader::load_model(fixture(), 5);
  const auto ids = reference_ids();
  const auto chunked = all_logits(*m.model, ids), stepwise = all_logits(*m.model, ids, true);
  EXPECT_LT(test::max_abs_diff(chunked, stepwise), 2e-5f);
  EXPECT_LT(test::max_abs_diff(chunked, test::read_f32(fixture() / "reference_logits.f32")), 1e-3f);
}

TEST_P(Gemma4Fixture, BatchedDecodeEqualsLoneStepsBitForBit) {
  auto m = loader::load_model(fixture(), 256);
  kernels::ThreadPool pool(2);
  const int64_t vocab = m.model->shape().vocab_size;
  const auto ids = reference_ids();
  std::vector<nn::KVCache> caches;
  std::vector<float> scratch(vocab);
  for (int i = 0; i < 3; ++i) {
    caches.push_back(m.model->make_cache(32));
    m.model->forward(std::span(ids).first(5 + 4 * i), 0, caches[i], pool, scratch.data(), false);
  }
  std::vector<nn::KVCache> lone = caches;
  std::vector<models::DecodeRow> rows;
  for (int i = 0; i < 3; ++i) rows.push_back({ids[10 + i], 5 + 4 * i, &caches[i]});
  std::vector<float> batched(3 * vocab);
  m.model->decode(rows, pool, batched.data());
  for (int i = 0; i < 3; ++i) {
    m.model->forward(std::span(&ids[10 + i], 1), 5 + 4 * i, lone[i], pool, scratch.data(), false);
    EXPECT_TRUE(std::equal(scratch.begin(), scratch.end(), batched.begin() + i * vocab)) << "row " << i;
  }
}

// The same weights; the file stores the vectors and small matrices in f32, whose kernels sum in another order
// than the folder's bf16 ones. The chunked prompt reads the file's KV-shared layers and window as the folder's.
TEST_P(Gemma4Fixture, GgufFromConvertGivesTheFolderLogits) {
  test::ScratchDir dir;
  auto folder = loader::load_model(fixture(), 256);
  const auto ids = reference_ids();
  const auto want = all_logits(*folder.model, ids);
  const auto reference = test::read_f32(fixture() / "reference_logits.f32");
  for (const auto type : {convert::OutType::BF16, convert::OutType::F32}) {
    const fs::path file = convert_fixture(fixture(), dir.path(), type);
    auto gguf = loader::load_model(file, 5);
    EXPECT_STREQ(gguf.model->family_name(), "gemma4");
    EXPECT_EQ(gguf.chat_format, runtime::ChatFormat::kGemma4);
    const auto chunked = all_logits(*gguf.model, ids), stepwise = all_logits(*gguf.model, ids, true);
    const float d = test::max_abs_diff(chunked, want);
    std::printf("%s %s GGUF: max |logit - folder| = %.3g\n", GetParam().c_str(), convert::out_type_name(type).data(), d);
    EXPECT_LE(d, 5e-5f) << convert::out_type_name(type);
    EXPECT_LT(test::max_abs_diff(chunked, reference), 1e-3f) << convert::out_type_name(type);
    EXPECT_LT(test::max_abs_diff(chunked, stepwise), 2e-5f) << convert::out_type_name(type);
  }
}

// The default path (activations in 8-bit blocks; the experts read only from their repacked copy, their stored
// weights let go) on a q8_0 file lands as close to the float64 reference as llama.cpp does on the same file:
// llama.cpp's max |logit - reference| measured with dump_logits (unslothai/llama.cpp d32676d, 2 threads) on
// the q8_0 files `gemma convert` writes, with the 1.15x allowance of the GGUF types' tests for chance.
TEST_P(Gemma4Fixture, DefaultPathOnQ8_0IsAsCloseAsLlamaCpp) {
  const float llama_cpp = GetParam() == "gemma4-tiny" ? 0.6189f : 0.7922f;
  test::ScratchDir dir;
  auto m = loader::load_model(convert_fixture(fixture(), dir.path(), convert::OutType::Q8_0), 256);
  m.model->set_prefill_precision(kernels::Precision::kReducedActivations);
  m.model->set_decode_precision(kernels::Precision::kReducedActivations);
  const auto reference = test::read_f32(fixture() / "reference_logits.f32");
  for (const bool stepwise : {false, true}) {
    const float d = test::max_abs_diff(all_logits(*m.model, reference_ids(), stepwise), reference);
    std::printf("%s q8_0 default path%s: max |logit - reference| = %.4f (llama.cpp: %.4f)\n", GetParam().c_str(),
                stepwise ? " (decode)" : "", d, llama_cpp);
    EXPECT_LE(d, 1.15f * llama_cpp);
  }
}

void expect_same_config(const gemma4::Config& got, const gemma4::Config& want) {
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.hidden_size, want.hidden_size);
  EXPECT_EQ(got.num_heads, want.num_heads);
  EXPECT_EQ(got.sliding_window, want.sliding_window);
  EXPECT_EQ(got.final_logit_softcapping, want.final_logit_softcapping);
  EXPECT_EQ(got.hidden_size_per_layer_input, want.hidden_size_per_layer_input);
  EXPECT_EQ(got.num_kv_shared_layers, want.num_kv_shared_layers);
  EXPECT_EQ(got.enable_moe_block, want.enable_moe_block);
  EXPECT_EQ(got.num_experts, want.num_experts);
  EXPECT_EQ(got.top_k_experts, want.top_k_experts);
  EXPECT_EQ(got.moe_intermediate_size, want.moe_intermediate_size);
  EXPECT_EQ(got.pad_token_id, want.pad_token_id);
  EXPECT_EQ(got.placeholder_ids, want.placeholder_ids);
  ASSERT_EQ(got.num_layers, want.num_layers);
  for (int64_t l = 0; l < got.num_layers; ++l) {
    const auto &a = got.layers[l], &b = want.layers[l];
    EXPECT_EQ(a.sliding, b.sliding) << l;
    EXPECT_EQ(a.head_dim, b.head_dim) << l;
    EXPECT_EQ(a.num_kv_heads, b.num_kv_heads) << l;
    EXPECT_EQ(a.k_eq_v, b.k_eq_v) << l;
    EXPECT_EQ(a.intermediate_size, b.intermediate_size) << l;
    EXPECT_EQ(gemma4::rope_inv_freq(a), gemma4::rope_inv_freq(b)) << l;
    EXPECT_EQ(got.kv_source(l), want.kv_source(l)) << l;
  }
}

gemma4::Config config_of(const fs::path& gguf) {
  const formats::GgufFile g(gguf);
  return loader::gemma4_config_from_gguf(g, loader::tokenizer_from_gguf(g));
}

TEST_P(Gemma4Fixture, GgufConfigIsTheFoldersConfig) {
  test::ScratchDir dir;
  expect_same_config(config_of(convert_fixture(fixture(), dir.path(), convert::OutType::F32)),
                     gemma4::resolve_config(test::read_json(fixture() / "config.json"), "config.json"));
}

// Files made as llama.cpp's converter makes them (tests/data/gemma4-gguf/make_llamacpp_style.py: its keys in its
// order through its gguf-py, its token types, bf16 matrices): the folder's config, logits and tokenizer.
TEST_P(Gemma4Fixture, LlamaCppStyleGgufReadsAsTheFolder) {
  const fs::path file =
      test::data_dir() / "gemma4-gguf" / (GetParam() == "gemma4-tiny" ? "llama-dense.gguf" : "llama-moe.gguf");
  expect_same_config(config_of(file),
                     gemma4::resolve_config(test::read_json(fixture() / "config.json"), "config.json"));
  auto folder = loader::load_model(fixture(), 256), gguf = loader::load_model(file, 256);
  const auto ids = reference_ids();
  const auto logits = all_logits(*gguf.model, ids);
  EXPECT_LE(test::max_abs_diff(logits, all_logits(*folder.model, ids)), 5e-5f);
  EXPECT_LT(test::max_abs_diff(logits, test::read_f32(fixture() / "reference_logits.f32")), 1e-3f);
  for (const std::string text : {"<|turn>user\nHi there<turn|>\n<|turn>model\n<|channel>thought\n<channel|>",
                                 "a  b\tc \u00e9 \U0001F642 <|image|>"})
    EXPECT_EQ(gguf.tokenizer.encode(text, true), folder.tokenizer.encode(text, true)) << text;
  auto eos = gguf.defaults.eos_ids, want = folder.defaults.eos_ids;
  std::sort(eos.begin(), eos.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(eos, want);
}

// What llama.cpp's gemma4 loader reads, checked against the reference's geometry and tokenizer.json.
TEST_P(Gemma4Fixture, GgufHasLlamaCppsKeysAndTensors) {
  test::ScratchDir dir;
  const formats::GgufFile g(convert_fixture(fixture(), dir.path(), convert::OutType::BF16));
  const auto& m = g.metadata();
  const auto ref = reference();
  const auto text = test::read_json(fixture() / "config.json")["text_config"];
  const auto n = static_cast<int64_t>(ref["layer_types"].size());
  EXPECT_EQ(m.get_string("general.architecture"), "gemma4");
  EXPECT_EQ(m.get_u32("gemma4.block_count"), n);
  std::vector<bool> sliding;
  for (const auto& t : ref["layer_types"]) sliding.push_back(t == "sliding_attention");
  EXPECT_EQ(m.get_array<bool>("gemma4.attention.sliding_window_pattern"), sliding);
  const int64_t full_dim = text["global_head_dim"], swa_dim = text["head_dim"];
  EXPECT_EQ(m.get_u32("gemma4.attention.key_length"), full_dim);
  EXPECT_EQ(m.get_u32("gemma4.attention.key_length_swa"), swa_dim);
  EXPECT_EQ(m.get_u32("gemma4.rope.dimension_count"), full_dim);
  EXPECT_EQ(m.get_u32("gemma4.rope.dimension_count_swa"), swa_dim);
  EXPECT_EQ(m.get_u32("gemma4.attention.shared_kv_layers"), text["num_kv_shared_layers"].get<uint32_t>());
  EXPECT_EQ(m.get_u32("gemma4.embedding_length_per_layer_input"), text["hidden_size_per_layer_input"].get<uint32_t>());
  // Per-layer counts: an array where the layers differ.
  const auto per_layer = [&](const std::string& key, const char* ref_key) {
    std::vector<int64_t> want = ref[ref_key].get<std::vector<int64_t>>(), got;
    if (const auto* one = std::get_if<uint32_t>(m.value(key))) got.assign(n, *one);
    else for (int32_t v : m.get_array<int32_t>(key)) got.push_back(v);
    EXPECT_EQ(got, want) << key;
  };
  per_layer("gemma4.attention.head_count_kv", "layer_num_key_value_heads");
  per_layer("gemma4.feed_forward_length", "layer_intermediate_size");
  // Proportional RoPE: a quarter of the full head's pairs turn (factor 1), the rest carry 1e30.
  const Tensor* freqs = g.find("rope_freqs.weight");
  ASSERT_TRUE(freqs);
  ASSERT_EQ(freqs->dtype, DType::F32);
  ASSERT_EQ(freqs->shape, std::vector<int64_t>{full_dim / 2});
  const auto* f = reinterpret_cast<const float*>(freqs->data);
  for (int64_t j = 0; j < full_dim / 2; ++j) EXPECT_EQ(f[j], j < full_dim / 8 ? 1.0f : 1e30f) << j;
  for (int64_t l = 0; l < n; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    EXPECT_EQ(g.find(b + "attn_v.weight") == nullptr, ref["layer_v_is_raw_k"][l].get<bool>()) << l;
    ASSERT_TRUE(g.find(b + "layer_output_scale.weight")) << l;
    EXPECT_EQ(g.find(b + "layer_output_scale.weight")->shape, std::vector<int64_t>{1});
  }
  if (text["enable_moe_block"].get<bool>()) {
    const int64_t e = text["num_experts"], h = text["hidden_size"], ff = text["moe_intermediate_size"];
    EXPECT_EQ(m.get_u32("gemma4.expert_count"), e);
    EXPECT_EQ(m.get_u32("gemma4.expert_used_count"), text["top_k_experts"].get<uint32_t>());
    EXPECT_EQ(m.get_u32("gemma4.expert_feed_forward_length"), ff);
    EXPECT_EQ(g.find("blk.0.ffn_gate_inp.weight")->dtype, DType::F32);  // the router is never rounded
    EXPECT_EQ(g.find("blk.0.ffn_gate_up_exps.weight")->shape, (std::vector<int64_t>{e, 2 * ff, h}));
    EXPECT_EQ(g.find("blk.0.ffn_down_exps.weight")->shape, (std::vector<int64_t>{e, h, ff}));
    EXPECT_EQ(g.find("blk.0.ffn_down_exps.scale")->shape, std::vector<int64_t>{e});
    EXPECT_EQ(g.find("blk.0.ffn_gate_inp.scale")->shape, std::vector<int64_t>{h});
  }
  // The vocabulary: tokenizer.json's pieces by id and its merges, "left right".
  const auto tj = test::read_json(fixture() / "tokenizer.json");
  EXPECT_EQ(m.get_string("tokenizer.ggml.model"), "gemma4");
  const auto& merges = m.get_array<std::string>("tokenizer.ggml.merges");
  ASSERT_EQ(merges.size(), tj["model"]["merges"].size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& want = tj["model"]["merges"][i];
    EXPECT_EQ(merges[i], want.is_string() ? want.get<std::string>() : want[0].get<std::string>() + " " + want[1].get<std::string>());
  }
  const auto& tokens = m.get_array<std::string>("tokenizer.ggml.tokens");
  const auto& types = m.get_array<int32_t>("tokenizer.ggml.token_type");
  for (const auto& [piece, id] : tj["model"]["vocab"].items()) EXPECT_EQ(tokens.at(id.get<size_t>()), piece);
  // Special added tokens are control, except those llama.cpp keeps visible; other added tokens user-defined.
  const std::set<std::string> visible = {"<|channel>",       "<channel|>",        "<|tool_call>", "<tool_call|>",
                                         "<|tool_response>", "<tool_response|>", "<|\"|>"};
  for (const auto& a : tj["added_tokens"]) {
    const std::string content = a["content"];
    EXPECT_EQ(types.at(a["id"].get<size_t>()), a["special"].get<bool>() && !visible.count(content) ? 3 : 4) << content;
  }
}

// tokenizer.json and the GGUF's lists encode and decode alike, and the file ends generation on the ids
// generation_config.json lists.
TEST(Gemma4Gguf, TokenizerAndEndOfGenerationAreTheFolders) {
  test::ScratchDir dir;
  const fs::path fixture = test::data_dir() / "gemma4-tiny";
  const formats::GgufFile g(convert_fixture(fixture, dir.path(), convert::OutType::BF16));
  const Tokenizer from_file = loader::tokenizer_from_gguf(g), from_json = Tokenizer::load(fixture);
  ASSERT_EQ(from_file.size(), from_json.size());
  for (const std::string text :
       {"Hello world, this is  a test.", "<|turn>user\nTabs\tand \u00fcn\u00efc\u00f6d\u00e9 \U0001F642 <|image|> end<turn|>",
        "  leading and trailing  ", "\n\n\nthree newlines\t\t", "<bos><|channel>thought<channel|>x", ""}) {
    for (const bool bos : {true, false}) {
      const auto ids = from_json.encode(text, bos);
      EXPECT_EQ(from_file.encode(text, bos), ids) << text;
      EXPECT_EQ(from_file.decode(ids), from_json.decode(ids)) << text;
    }
  }
  // Control tokens stay special (those llama.cpp keeps visible are user-defined in the file).
  for (int32_t id = 0; id < from_json.size(); ++id)
    EXPECT_TRUE(!from_file.is_special(id) || from_json.is_special(id)) << id;
  for (const char* piece : {"<bos>", "<eos>", "<|turn>", "<turn|>"}) EXPECT_TRUE(from_file.is_special(*from_file.find(piece)));
  auto eos = loader::end_of_generation_ids(g, from_file);
  auto want = test::read_json(fixture / "generation_config.json")["eos_token_id"].get<std::vector<int32_t>>();
  std::sort(eos.begin(), eos.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(eos, want);
}

TEST(Gemma4Gguf, LyingFilesAreErrorsNamingTheKeyOrTensor) {
  test::ScratchDir dir;
  const fs::path fixture = test::data_dir() / "gemma4-moe-tiny";
  const fs::path good = convert_fixture(fixture, dir.path(), convert::OutType::F32), bad = dir.path() / "bad.gguf";
  const auto error_with = [&](const std::map<std::string, std::optional<formats::GgufValue>>& keys,
                              const std::function<std::string(const std::string&)>& rename = {}) {
    test::rewrite_gguf(good, bad, keys, rename);
    return test::error_of([&] { loader::load_model(bad, 16); });
  };
  const auto expect_in = [](const std::string& err, const std::string& part) {
    EXPECT_NE(err.find(part), std::string::npos) << err;
  };
  expect_in(error_with({{"gemma4.attention.sliding_window_pattern", formats::GgufValue(std::vector<bool>{true, false})}}),
            "'gemma4.attention.sliding_window_pattern' has 2 entries for 8 layers");
  expect_in(error_with({{"gemma4.attention.head_count_kv", formats::GgufValue(std::vector<int32_t>{2, 2})}}),
            "'gemma4.attention.head_count_kv' has 2 entries for 8 layers");
  expect_in(error_with({{"tokenizer.ggml.merges", std::nullopt}}), "'tokenizer.ggml.merges' is missing");
  expect_in(error_with({{"gemma4.attention.key_length_swa", std::nullopt}}), "'gemma4.attention.key_length_swa' is missing");
  expect_in(error_with({{"gemma4.rope.dimension_count", formats::GgufValue(uint32_t{16})}}), "gemma4.rope.dimension_count");
  expect_in(error_with({}, [](const std::string& name) {
              return name == "blk.3.ffn_gate_up_exps.weight" ? std::string("blk.3.ffn_gate_exps.weight") : name;
            }),
            "tensor 'blk.3.ffn_gate_exps.weight': experts with separate gate and up matrices are not supported");
  expect_in(error_with({}, [](const std::string& name) { return name == "blk.2.ffn_down_exps.scale" ? "" : name; }),
            "router.per_expert_scale");
  expect_in(test::error_of([&] { loader::load_model(good, 16, good); }), "Gemma 4 reads text only here");
}

// A Gemma 4 checkpoint under the names mlx-lm saves it with: language_model.model. before the text model, the
// experts' fused gate_up split into SwitchGLU's gate_proj and up_proj, down_proj beside them, the towers gone.
class MlxLmLayout final : public TensorSource {
 public:
  explicit MlxLmLayout(const TensorSource& src) : src_(src) {
    const std::string text = "model.language_model.";
    for (const Tensor* t : src.all()) {
      if (!t->name.starts_with(text)) continue;
      std::string name = "language_model.model." + t->name.substr(text.size());
      if (name.ends_with("experts.gate_up_proj")) {
        split_gate_up(*t, name.substr(0, name.size() - 12) + "switch_glu.");
        continue;
      }
      if (name.ends_with("experts.down_proj")) name = name.substr(0, name.size() - 9) + "switch_glu.down_proj.weight";
      Tensor view = *t;
      view.name = name;
      tensors_[name] = view;
    }
  }
  const Tensor* find(std::string_view name) const override {
    const auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  std::vector<const Tensor*> all() const override {
    std::vector<const Tensor*> out;
    for (const auto& [name, t] : tensors_) out.push_back(&t);
    return out;
  }
  std::string describe() const override { return src_.describe() + " (mlx-lm's names)"; }

 private:
  // [experts, 2F, H] -> gate [experts, F, H] and up [experts, F, H], f32.
  void split_gate_up(const Tensor& t, const std::string& prefix) {
    const int64_t experts = t.shape[0], f = t.shape[1] / 2, h = t.shape[2];
    for (const auto& [part, first] : {std::pair{"gate_proj", int64_t{0}}, std::pair{"up_proj", f}}) {
      auto& values = storage_.emplace_back(static_cast<size_t>(experts * f * h));
      for (int64_t e = 0; e < experts; ++e)
        for (int64_t r = 0; r < f; ++r)
          kernels::dequantize_row(t, e * 2 * f + first + r, 1.0f, values.data() + (e * f + r) * h);
      const std::string name = prefix + part + ".weight";
      tensors_[name] = Tensor{name, DType::F32, {experts, f, h}, reinterpret_cast<const std::byte*>(values.data()),
                              values.size() * sizeof(float)};
    }
  }

  const TensorSource& src_;
  std::deque<std::vector<float>> storage_;
  std::map<std::string, Tensor, std::less<>> tensors_;
};

// mlx-community's MoE folders: the experts as SwitchGLU stacks, quantized where their rows are whole groups (on
// this fixture the down projections; gate and up, 80 wide, stay float as mlx-lm leaves them), are the model of
// their dequantized weights.
TEST(Gemma4Mlx, SwitchGluExpertsAreTheModelOfTheirDequantizedWeights) {
  const fs::path dir = test::data_dir() / "gemma4-moe-tiny";
  const formats::SafetensorsCheckpoint ckpt(dir);
  const MlxLmLayout layout(ckpt);
  const auto config = gemma4::resolve_config(test::read_json(dir / "config.json"), "config.json");
  const auto ids = test::read_json(dir / "reference.json")["token_ids"].get<std::vector<int32_t>>();
  const test::QuantParams p{test::QuantMode::kAffine, 4, 32};
  nn::QuantizationConfig q;
  q.defaults = p;
  const auto params_of = [&](const std::string&) -> std::optional<test::QuantParams> { return p; };
  const test::QuantizedCopy quantized(layout, params_of, false), reference(layout, params_of, true);
  gemma4::Model got(config, nn::LayerSource(quantized, q), 64), want(config, nn::LayerSource(reference), 64);
  const auto& experts = *got.weights().layers[0].experts;
  EXPECT_EQ(nn::weight_format(experts.down[3].weight()), "affine 4-bit g32");
  EXPECT_EQ(nn::weight_format(experts.gate[3].weight()), "F32");
  const auto expected = all_logits(want, ids);
  const float exact = std::max(test::max_abs_diff(all_logits(got, ids), expected),
                               test::max_abs_diff(all_logits(got, ids, true), expected));
  got.set_prefill_precision(kernels::Precision::kReducedActivations);
  got.set_decode_precision(kernels::Precision::kReducedActivations);
  const float fast = test::max_abs_diff(all_logits(got, ids), expected);
  gemma4::Model unquantized(config, nn::LayerSource(ckpt), 64);
  const float rounding = test::max_abs_diff(all_logits(unquantized, ids), expected);
  std::printf("gemma4-moe-tiny affine 4-bit g32: exact %.2g, default path %.3f from the dequantized model (the "
              "weights' rounding: %.3f)\n", exact, fast, rounding);
  EXPECT_LT(exact, 5e-5f);
  EXPECT_LT(fast, rounding);
  EXPECT_GT(rounding, 1e-2f) << "the copy should be quantized";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Gemma4Fixture, ::testing::Values("gemma4-tiny", "gemma4-moe-tiny"),
                         [](const auto& info) { return info.param == "gemma4-tiny" ? "Dense" : "MoE"; });

}  // namespace
}  // namespace ge
