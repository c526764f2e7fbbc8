// Gemma 3 text checkpoints -> GGUF (arch "gemma3"), following llama.cpp's convert_hf_to_gguf.py
// (Gemma3Model): metadata keys, the "llama" (SentencePiece) vocabulary, tensor names, norms stored as
// w + 1, 1-D tensors in f32, and the embedding table cut to the vocabulary.
#include "convert/gguf_convert.h"

#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "formats/gguf.h"
#include "formats/json_file.h"
#include "formats/safetensors.h"
#include "kernels/quantize.h"
#include "tensor/dtype.h"
#include "tokenizer/json_file.h"
#include "tokenizer/tokenizer_model.h"

namespace ge::convert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// GGUF token types (llama.cpp's SentencePieceTokenTypes / gguf TokenType).
enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

// ggml file type ids (llama_ftype).
uint32_t file_type_id(OutType t) {
  switch (t) {
    case OutType::F32:
      return 0;  // ALL_F32
    case OutType::F16:
      return 1;  // MOSTLY_F16
    case OutType::BF16:
      return 32;  // MOSTLY_BF16
    case OutType::Q8_0:
      return 7;  // MOSTLY_Q8_0
    case OutType::Q4_0:
      return 2;  // MOSTLY_Q4_0
  }
  return 0;
}

DType dtype_of(OutType t) {
  switch (t) {
    case OutType::F32:
      return DType::F32;
    case OutType::F16:
      return DType::F16;
    case OutType::BF16:
      return DType::BF16;
    case OutType::Q8_0:
      return DType::Q8_0;
    case OutType::Q4_0:
      return DType::Q4_0;
  }
  return DType::F32;
}

// The type a 2-D weight of rows of row_len elements is written in. Block types need whole 32-weight
// blocks per row; llama.cpp's converter falls back to f16 for a matrix that cannot be quantized, and so
// do we (token_embd and output are quantized like any other matrix, as llama.cpp does for q8_0).
DType matrix_dtype(DType wanted, int64_t row_len) {
  const int64_t block = dtype_info(wanted).block_elems;
  return row_len % block == 0 ? wanted : DType::F16;
}

// ---- config.json ----

// The text model's hyperparameters, with the transformers Gemma3TextConfig defaults for absent keys.
struct TextParams {
  std::string model_type;
  int64_t vocab_size = 262208, hidden = 2304, ff = 9216, layers = 26, heads = 8, kv_heads = 4, head_dim = 256;
  int64_t context = 131072, sliding_window = 4096;
  double rms_eps = 1e-6, rope_theta = 1e6, rope_local_theta = 10000;
  std::optional<double> final_softcap;
  std::optional<double> linear_rope_factor;
  bool write_sliding_window = true;
  bool vision_wrapper = false;  // model_type gemma3: text model nested under text_config
};

class Config {
 public:
  Config(json j, std::string file) : j_(std::move(j)), file_(std::move(file)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  int64_t integer(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_number_integer()) fail(file_ + ": " + key + ": expected an integer, found " + v.dump());
    const int64_t n = v.get<int64_t>();
    if (n <= 0) fail(file_ + ": " + key + ": must be positive, found " + std::to_string(n));
    return n;
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_number()) fail(file_ + ": " + key + ": expected a number, found " + v.dump());
    return v.get<double>();
  }
  const json& raw() const { return j_; }

 private:
  json j_;
  std::string file_;
};

TextParams read_text_params(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  if (!fs::is_regular_file(file)) fail(file.string() + ": not found (not a Hugging Face checkpoint folder?)");
  json root = formats::read_json_file(file);
  if (!root.is_object()) fail(file.string() + ": expected a JSON object");
  const std::string model_type = root.contains("model_type") && root["model_type"].is_string()
                                     ? root["model_type"].get<std::string>()
                                     : "";
  TextParams p;
  json text;
  if (model_type == "gemma3_text") {
    text = root;
  } else if (model_type == "gemma3") {
    p.vision_wrapper = true;
    // As llama.cpp does: text_config's keys moved to the root level.
    text = root;
    if (root.contains("text_config") && root["text_config"].is_object())
      for (const auto& [k, v] : root["text_config"].items()) text[k] = v;
  } else {
    fail(file.string() + ": model_type " + (model_type.empty() ? "(missing)" : "'" + model_type + "'") +
         " is not supported by gemma convert (supported: gemma3_text, gemma3)");
  }
  p.model_type = model_type;
  const Config c(std::move(text), file.string());
  p.vocab_size = c.integer("vocab_size", p.vocab_size);
  p.hidden = c.integer("hidden_size", p.hidden);
  p.ff = c.integer("intermediate_size", p.ff);
  p.layers = c.integer("num_hidden_layers", p.layers);
  p.heads = c.integer("num_attention_heads", p.heads);
  p.kv_heads = c.integer("num_key_value_heads", p.kv_heads);
  p.head_dim = c.integer("head_dim", p.head_dim);
  p.context = c.integer("max_position_embeddings", p.context);
  p.sliding_window = c.integer("sliding_window", p.sliding_window);
  p.rms_eps = c.number("rms_norm_eps", p.rms_eps);
  p.rope_theta = c.number("rope_theta", p.rope_theta);
  p.rope_local_theta = c.number("rope_local_base_freq", p.rope_local_theta);
  if (c.has("final_logit_softcapping")) {
    const double cap = c.number("final_logit_softcapping", 0);
    if (cap != 0) p.final_softcap = cap;
  }
  if (c.has("attn_logit_softcapping"))
    fail(file.string() +
         ": attn_logit_softcapping is set, which Gemma 3 (and llama.cpp's gemma3) does not support");
  // llama.cpp writes the sliding window unless sliding_window_pattern is 1 (every layer global).
  if (c.has("sliding_window_pattern") && c.raw()["sliding_window_pattern"] == 1)
    p.write_sliding_window = false;

  // RoPE: rope_scaling (older transformers) or rope_parameters, possibly per layer type.
  json rope = c.has("rope_parameters") ? c.raw()["rope_parameters"]
                                       : (c.has("rope_scaling") ? c.raw()["rope_scaling"] : json::object());
  if (!rope.is_object()) fail(file.string() + ": rope_scaling: expected an object");
  if (rope.contains("sliding_attention") && rope["sliding_attention"].is_object()) {
    const json& s = rope["sliding_attention"];
    if (s.contains("rope_theta") && s["rope_theta"].is_number())
      p.rope_local_theta = s["rope_theta"].get<double>();
  }
  const json full =
      rope.contains("full_attention") && rope["full_attention"].is_object() ? rope["full_attention"] : rope;
  if (full.contains("rope_theta") && full["rope_theta"].is_number())
    p.rope_theta = full["rope_theta"].get<double>();
  std::string rope_type;
  if (full.contains("rope_type") && full["rope_type"].is_string())
    rope_type = full["rope_type"];
  else if (full.contains("type") && full["type"].is_string())
    rope_type = full["type"];
  if (rope_type == "linear") {
    if (full.contains("factor") && full["factor"].is_number())
      p.linear_rope_factor = full["factor"].get<double>();
  } else if (!rope_type.empty() && rope_type != "default") {
    fail(file.string() + ": rope type '" + rope_type + "' is not supported (Gemma 3 uses linear or none)");
  }
  return p;
}

// ---- vocabulary ----

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

Vocab padded_vocab(int64_t n) {
  Vocab v;
  v.tokens.reserve(n);
  for (int64_t i = 0; i < n; ++i) v.tokens.push_back("[PAD" + std::to_string(i) + "]");
  v.scores.assign(n, -10000.0f);
  v.types.assign(n, kUnused);
  return v;
}

// llama.cpp's does_token_look_special: added tokens that ought to be control tokens though not flagged.
bool looks_special(std::string_view t) {
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (t.starts_with("<|") && t.ends_with("|>")) return true;
  if (t.starts_with("<\xEF\xBD\x9C") && t.ends_with("\xEF\xBD\x9C>")) return true;  // <｜ ... ｜>
  return t.starts_with("<unused") && t.ends_with(">");
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

// A non-special added token: SentencePiece's "▁" pre-normalized to a space, as llama.cpp does.
void set_added(Vocab& v, int64_t id, std::string content, bool special) {
  if (special || looks_special(content)) {
    v.types[id] = kControl;
  } else {
    content = replace_all(std::move(content), "\xE2\x96\x81", " ");
    v.types[id] = kUserDefined;
  }
  v.scores[id] = -1000.0f;
  v.tokens[id] = std::move(content);
}

// tokenizer.model (as llama.cpp's _create_vocab_sentencepiece): pieces with their scores and types, then
// added_tokens.json (user-defined), then tokenizer_config.json's added_tokens_decoder; ids past the
// model's vocab_size are dropped, ids no file names become [PADn] (unused).
Vocab vocab_from_sentencepiece(const fs::path& dir, int64_t n_vocab, const json& tokenizer_config) {
  Vocab v = padded_vocab(n_vocab);
  const auto pieces = tokenizer_detail::read_sentencepiece_pieces(dir / "tokenizer.model");
  for (size_t id = 0; id < pieces.size() && static_cast<int64_t>(id) < n_vocab; ++id) {
    v.tokens[id] = pieces[id].text;
    v.scores[id] = pieces[id].score;
    v.types[id] = pieces[id].type;
  }
  const fs::path added_file = dir / "added_tokens.json";
  if (fs::is_regular_file(added_file)) {
    const json added = formats::read_json_file(added_file);
    if (!added.is_object()) fail(added_file.string() + ": expected an object of token -> id");
    for (const auto& [content, id_json] : added.items()) {
      if (!id_json.is_number_integer())
        fail(added_file.string() + ": " + content + ": expected an integer id");
      const int64_t id = id_json.get<int64_t>();
      if (id < 0 || id >= n_vocab) continue;
      v.tokens[id] = content;
      v.scores[id] = -1000.0f;
      v.types[id] = kUserDefined;
    }
  }
  if (tokenizer_config.contains("added_tokens_decoder") &&
      tokenizer_config["added_tokens_decoder"].is_object()) {
    for (const auto& [key, data] : tokenizer_config["added_tokens_decoder"].items()) {
      int64_t id = -1;
      try {
        id = std::stoll(key);
      } catch (const std::exception&) {
        fail((dir / "tokenizer_config.json").string() + ": added_tokens_decoder: '" + key + "' is not an id");
      }
      if (id < 0 || id >= n_vocab || !data.is_object() || !data.contains("content") ||
          !data["content"].is_string())
        continue;
      set_added(v, id, data["content"].get<std::string>(), data.value("special", false));
    }
  }
  return v;
}

bool is_byte_piece(std::string_view t) {
  return t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
         std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]));
}

// tokenizer.json only: the same "llama" vocabulary, score = -(rank of the first merge that forms the
// piece), 0 for pieces no merge forms; <0xNN> pieces are bytes, added tokens control (special) or
// user-defined (so <unk>, a special added token, is control, as the tokenizer.model path makes it too).
Vocab vocab_from_tokenizer_json(const fs::path& dir, int64_t n_vocab) {
  using tokenizer_detail::JsonFile;
  const JsonFile file(dir / "tokenizer.json");
  const auto root = file.root();
  const auto model = file.as_object(file.member(root, "model", "model"), "model");
  if (file.string_member(model, "type", "model.type") != "BPE")
    file.fail("model.type", "only BPE is supported");
  Vocab v = padded_vocab(n_vocab);
  std::vector<bool> seen(n_vocab);
  for (const auto [piece, id_el] :
       file.as_object(file.member(model, "vocab", "model.vocab"), "model.vocab")) {
    const int64_t id = file.as_int(id_el, "model.vocab");
    if (id < 0 || id >= n_vocab) continue;
    v.tokens[id] = std::string(piece);
    v.scores[id] = 0.0f;
    v.types[id] = is_byte_piece(piece) ? kByte : kNormal;
    seen[id] = true;
  }
  std::unordered_map<std::string, uint32_t> rank_of;  // formed piece -> lowest merge rank
  uint32_t rank = 0;
  for (const auto m : file.as_array(file.member(model, "merges", "model.merges"), "model.merges")) {
    std::string formed;
    if (m.is_string()) {
      const std::string_view s = file.as_string(m, "model.merges");
      const size_t space = s.find(' ');
      if (space == std::string_view::npos) file.fail("model.merges", "a merge without a space");
      formed = std::string(s.substr(0, space)) + std::string(s.substr(space + 1));
    } else {
      const auto pair = file.as_array(m, "model.merges");
      if (pair.size() != 2) file.fail("model.merges", "a merge is not a pair");
      for (const auto part : pair) formed += file.as_string(part, "model.merges");
    }
    rank_of.try_emplace(std::move(formed), rank++);
  }
  for (int64_t id = 0; id < n_vocab; ++id) {
    if (!seen[id]) continue;
    const auto it = rank_of.find(v.tokens[id]);
    if (it != rank_of.end()) v.scores[id] = -static_cast<float>(it->second);
  }
  if (const auto added = file.optional_member(root, "added_tokens")) {
    for (const auto t : file.as_array(*added, "added_tokens")) {
      const auto o = file.as_object(t, "added_tokens");
      const int64_t id = file.as_int(file.member(o, "id", "added_tokens.id"), "added_tokens.id");
      if (id < 0 || id >= n_vocab) continue;
      const bool special = file.bool_or(o, "special", "added_tokens.special", false);
      std::string content(file.string_member(o, "content", "added_tokens.content"));
      const float score = v.scores[id];
      set_added(v, id, std::move(content), special);
      v.scores[id] = seen[id] ? score : 0.0f;
    }
  }
  return v;
}

// tokenizer_config.json's "{typ}_token": a string or {"content": ...}.
std::optional<std::string> token_name(const json& tc, const std::string& key) {
  if (!tc.contains(key)) return std::nullopt;
  const json& e = tc[key];
  if (e.is_string()) return e.get<std::string>();
  if (e.is_object() && e.contains("content") && e["content"].is_string())
    return e["content"].get<std::string>();
  return std::nullopt;
}

// Special token ids, add_bos/add_eos and the chat template, as gguf-py's SpecialVocab finds them:
// tokenizer_config.json names first, then config.json's *_token_id integers.
void add_special_vocab(formats::GgufWriter& w, const fs::path& dir, const json& tokenizer_config,
                       const json& config, const std::vector<std::string>& tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const std::pair<const char*, const char*> kinds[] = {{"bos", "tokenizer.ggml.bos_token_id"},
                                                       {"eos", "tokenizer.ggml.eos_token_id"},
                                                       {"unk", "tokenizer.ggml.unknown_token_id"},
                                                       {"pad", "tokenizer.ggml.padding_token_id"}};
  for (const auto& [typ, key] : kinds) {
    std::optional<int64_t> id;
    if (const auto name = token_name(tokenizer_config, std::string(typ) + "_token")) {
      const auto it = std::find(tokens.begin(), tokens.end(), *name);
      if (it != tokens.end()) id = it - tokens.begin();
    }
    const std::string id_key = std::string(typ) + "_token_id";
    for (const json* c : {&config, config.contains("text_config") ? &config["text_config"] : nullptr}) {
      if (id || !c || !c->is_object() || !c->contains(id_key) || !(*c)[id_key].is_number_integer()) continue;
      const int64_t i = (*c)[id_key].get<int64_t>();
      if (i >= 0 && i < n) id = i;
    }
    if (id) w.add(key, static_cast<uint32_t>(*id));
  }
  for (const char* typ : {"bos", "eos"}) {
    const std::string k = std::string("add_") + typ + "_token";
    if (tokenizer_config.contains(k) && tokenizer_config[k].is_boolean())
      w.add("tokenizer.ggml." + k, tokenizer_config[k].get<bool>());
  }
  std::optional<std::string> tmpl;
  if (tokenizer_config.contains("chat_template") && tokenizer_config["chat_template"].is_string()) {
    tmpl = tokenizer_config["chat_template"].get<std::string>();
  } else if (fs::is_regular_file(dir / "chat_template.jinja")) {
    std::ifstream in(dir / "chat_template.jinja", std::ios::binary);
    tmpl = std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else if (fs::is_regular_file(dir / "chat_template.json")) {
    const json j = formats::read_json_file(dir / "chat_template.json");
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
      tmpl = j["chat_template"].get<std::string>();
  }
  if (tmpl) w.add("tokenizer.chat_template", *tmpl);
}

// ---- tensors ----

struct Planned {
  std::string name;  // GGUF name
  const Tensor* src = nullptr;
  DType out = DType::F32;
  std::vector<int64_t> shape;  // written shape (outermost first); rows may be fewer than the source's
  bool add_one = false;        // Gemma norm: w -> w + 1
};

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

void widen(DType t, const std::byte* src, size_t n, float* out) {
  if (t == DType::F32) {
    std::memcpy(out, src, n * 4);
  } else if (t == DType::BF16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(out + i, &bits, 4);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = f16_to_f32(h);
    }
  }
}

#if defined(__x86_64__)
// F16C rounds to nearest even, as the scalar f32_to_f16 does, ~10x faster than the software conversion
// a build without -march gets.
__attribute__((target("avx2,f16c"))) void narrow_f16_f16c(const float* in, size_t n, uint16_t* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) out[i] = f32_to_f16(in[i]);
}
#endif

// n is a whole number of blocks for the block types: write_tensor's chunks are multiples of 32 elements
// (or a tensor's tail, itself whole rows), and matrix_dtype only picks a block type for rows of whole blocks.
void narrow(DType t, const float* in, size_t n, std::byte* dst) {
  if (t == DType::F32) {
    std::memcpy(dst, in, n * 4);
    return;
  }
  if (t == DType::Q8_0) return kernels::quantize_row_q8_0(in, static_cast<int64_t>(n), dst);
  if (t == DType::Q4_0) return kernels::quantize_row_q4_0(in, static_cast<int64_t>(n), dst);
  auto* out = reinterpret_cast<uint16_t*>(dst);  // the buffer is a std::vector, suitably aligned
  if (t == DType::BF16) {
    for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
    return;
  }
#if defined(__x86_64__)
  static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  if (f16c) return narrow_f16_f16c(in, n, out);
#endif
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

// Drops the pages of [data, data + n) from this process (they stay in the page cache), so that reading a
// whole mmapped checkpoint does not add up in the resident set.
void release_pages(const std::byte* data, size_t n) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + n + page - 1) & ~(page - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

constexpr size_t kChunkElems = size_t{1} << 20;

void write_tensor(const Planned& t, std::ostream& out, std::vector<float>& floats,
                  std::vector<std::byte>& buffer) {
  const DType in = t.src->dtype;
  const size_t in_size = dtype_info(in).block_bytes;
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  const size_t total = static_cast<size_t>(n);
  for (size_t begin = 0; begin < total; begin += kChunkElems) {
    const size_t count = std::min(kChunkElems, total - begin);
    const std::byte* src = t.src->data + begin * in_size;
    if (in == t.out && !t.add_one) {
      out.write(reinterpret_cast<const char*>(src), static_cast<std::streamsize>(count * in_size));
    } else {
      const size_t out_bytes = *dtype_bytes(t.out, static_cast<int64_t>(count));
      floats.resize(count);
      buffer.resize(out_bytes);
      widen(in, src, count, floats.data());
      if (t.add_one)
        for (float& f : floats) f += 1.0f;
      narrow(t.out, floats.data(), count, buffer.data());
      out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(out_bytes));
    }
    release_pages(src, count * in_size);
  }
}

class Planner {
 public:
  Planner(const formats::SafetensorsCheckpoint& ckpt, const fs::path& dir, DType matrix_type)
      : ckpt_(ckpt), dir_(dir), matrix_type_(matrix_type) {}

  const Tensor& get(const std::string& name, const std::vector<int64_t>& shape) const {
    const Tensor* t = ckpt_.find(name);
    if (!t) fail(dir_.string() + ": tensor '" + name + "' is missing from the checkpoint");
    if (!is_float(t->dtype))
      fail(dir_.string() + ": tensor '" + name + "' has dtype " + std::string(dtype_info(t->dtype).name) +
           "; only F32, F16 and BF16 checkpoints are supported");
    if (t->shape != shape)
      fail(dir_.string() + ": tensor '" + name + "' has shape " + shape_string(t->shape) +
           ", config.json implies " + shape_string(shape));
    return *t;
  }

  void add(std::string gguf_name, const std::string& src_name, const std::vector<int64_t>& shape) {
    const Tensor& t = get(src_name, shape);
    const bool norm = gguf_name.ends_with("norm.weight");
    const DType out = (norm || shape.size() <= 1) ? DType::F32 : matrix_dtype(matrix_type_, shape.back());
    plan.push_back({std::move(gguf_name), &t, out, shape, norm});
    used.insert(src_name);
  }

  std::vector<Planned> plan;
  std::set<std::string, std::less<>> used;

 private:
  const formats::SafetensorsCheckpoint& ckpt_;
  fs::path dir_;
  DType matrix_type_;
};

std::string checkpoint_name(const fs::path& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

std::optional<OutType> parse_out_type(std::string_view name) {
  if (name == "f32") return OutType::F32;
  if (name == "f16") return OutType::F16;
  if (name == "bf16") return OutType::BF16;
  if (name == "q8_0") return OutType::Q8_0;
  if (name == "q4_0") return OutType::Q4_0;
  return std::nullopt;
}

std::string_view out_type_name(OutType t) {
  switch (t) {
    case OutType::F32:
      return "f32";
    case OutType::F16:
      return "f16";
    case OutType::BF16:
      return "bf16";
    case OutType::Q8_0:
      return "q8_0";
    case OutType::Q4_0:
      return "q4_0";
  }
  return "?";
}

ConvertResult convert_to_gguf(const fs::path& hf_dir, const fs::path& out_path,
                              const ConvertOptions& options) {
  if (!fs::is_directory(hf_dir)) fail(hf_dir.string() + ": not a directory");
  const TextParams p = read_text_params(hf_dir);
  const json config = formats::read_json_file(hf_dir / "config.json");
  const fs::path tc_file = hf_dir / "tokenizer_config.json";
  const json tokenizer_config = fs::is_regular_file(tc_file) ? formats::read_json_file(tc_file) : json::object();
  if (!tokenizer_config.is_object()) fail(tc_file.string() + ": expected a JSON object");

  const formats::SafetensorsCheckpoint ckpt(hf_dir, /*populate=*/false);

  // Where the text model's tensors live.
  std::string prefix = "model.";
  std::string lm_head = "lm_head.weight";
  if (p.vision_wrapper) {
    if (ckpt.find("model.language_model.embed_tokens.weight")) {
      prefix = "model.language_model.";
    } else {
      prefix = "language_model.model.";
      lm_head = "language_model.lm_head.weight";
    }
  }
  const Tensor* embed = ckpt.find(prefix + "embed_tokens.weight");
  if (!embed)
    fail(hf_dir.string() + ": tensor '" + prefix + "embed_tokens.weight' is missing from the checkpoint");

  OutType out_type = OutType::BF16;
  if (options.out_type) {
    out_type = *options.out_type;
  } else if (embed->dtype == DType::F32) {
    out_type = OutType::F32;
  } else if (embed->dtype == DType::F16) {
    out_type = OutType::F16;
  }

  // Vocabulary: tokenizer.model when present (as llama.cpp), else tokenizer.json.
  Vocab vocab;
  if (fs::is_regular_file(hf_dir / "tokenizer.model")) {
    vocab = vocab_from_sentencepiece(hf_dir, p.vocab_size, tokenizer_config);
  } else if (fs::is_regular_file(hf_dir / "tokenizer.json")) {
    vocab = vocab_from_tokenizer_json(hf_dir, p.vocab_size);
  } else {
    fail(hf_dir.string() + ": neither tokenizer.model nor tokenizer.json found");
  }
  const auto n_vocab = static_cast<int64_t>(vocab.tokens.size());
  if (embed->shape.size() != 2 || embed->shape[1] != p.hidden || embed->shape[0] < n_vocab)
    fail(hf_dir.string() + ": tensor '" + prefix + "embed_tokens.weight' has shape " +
         shape_string(embed->shape) + ", expected at least [" + std::to_string(n_vocab) + ", " +
         std::to_string(p.hidden) + "]");

  // Tensors, in llama.cpp's order of names.
  Planner plan(ckpt, hf_dir, dtype_of(out_type));
  {
    // The embedding table is cut to the vocabulary (llama.cpp drops the rows past it).
    const Tensor& t = plan.get(prefix + "embed_tokens.weight", embed->shape);
    plan.plan.push_back(
        {"token_embd.weight", &t, matrix_dtype(dtype_of(out_type), p.hidden), {n_vocab, p.hidden}, false});
    plan.used.insert(prefix + "embed_tokens.weight");
  }
  const int64_t q_dim = p.heads * p.head_dim, kv_dim = p.kv_heads * p.head_dim;
  for (int64_t l = 0; l < p.layers; ++l) {
    const std::string src = prefix + "layers." + std::to_string(l) + ".";
    const std::string dst = "blk." + std::to_string(l) + ".";
    plan.add(dst + "attn_norm.weight", src + "input_layernorm.weight", {p.hidden});
    plan.add(dst + "attn_q.weight", src + "self_attn.q_proj.weight", {q_dim, p.hidden});
    plan.add(dst + "attn_k.weight", src + "self_attn.k_proj.weight", {kv_dim, p.hidden});
    plan.add(dst + "attn_v.weight", src + "self_attn.v_proj.weight", {kv_dim, p.hidden});
    plan.add(dst + "attn_output.weight", src + "self_attn.o_proj.weight", {p.hidden, q_dim});
    plan.add(dst + "attn_q_norm.weight", src + "self_attn.q_norm.weight", {p.head_dim});
    plan.add(dst + "attn_k_norm.weight", src + "self_attn.k_norm.weight", {p.head_dim});
    plan.add(dst + "post_attention_norm.weight", src + "post_attention_layernorm.weight", {p.hidden});
    plan.add(dst + "ffn_norm.weight", src + "pre_feedforward_layernorm.weight", {p.hidden});
    plan.add(dst + "ffn_gate.weight", src + "mlp.gate_proj.weight", {p.ff, p.hidden});
    plan.add(dst + "ffn_up.weight", src + "mlp.up_proj.weight", {p.ff, p.hidden});
    plan.add(dst + "ffn_down.weight", src + "mlp.down_proj.weight", {p.hidden, p.ff});
    plan.add(dst + "post_ffw_norm.weight", src + "post_feedforward_layernorm.weight", {p.hidden});
  }
  plan.add("output_norm.weight", prefix + "norm.weight", {p.hidden});
  if (ckpt.find(lm_head)) plan.add("output.weight", lm_head, {n_vocab, p.hidden});

  // Anything else in the text model would be silently lost: refuse it.
  for (const Tensor* t : ckpt.all()) {
    if (plan.used.count(t->name)) continue;
    const std::string_view name = t->name;
    const bool tower =
        p.vision_wrapper &&
        (name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") ||
         name.starts_with("model.vision_tower.") || name.starts_with("model.multi_modal_projector."));
    if (tower) continue;  // the vision part goes to an mmproj file, not the text GGUF
    fail(hf_dir.string() + ": tensor '" + t->name + "' is not part of a Gemma 3 text model with " +
         std::to_string(p.layers) + " layers (config.json)");
  }

  // Metadata, in the order llama.cpp writes it.
  formats::GgufWriter w;
  const std::string arch = "gemma3";
  const std::string a = arch + ".";
  w.add("general.architecture", arch);
  w.add("general.type", std::string("model"));
  w.add("general.name", checkpoint_name(hf_dir));
  w.add(a + "block_count", static_cast<uint32_t>(p.layers));
  w.add(a + "context_length", static_cast<uint32_t>(p.context));
  w.add(a + "embedding_length", static_cast<uint32_t>(p.hidden));
  w.add(a + "feed_forward_length", static_cast<uint32_t>(p.ff));
  w.add(a + "attention.head_count", static_cast<uint32_t>(p.heads));
  w.add(a + "attention.head_count_kv", static_cast<uint32_t>(p.kv_heads));
  if (p.linear_rope_factor) {
    w.add(a + "rope.scaling.type", std::string("linear"));
    w.add(a + "rope.scaling.factor", static_cast<float>(*p.linear_rope_factor));
  }
  w.add(a + "rope.freq_base", static_cast<float>(p.rope_theta));
  w.add(a + "rope.freq_base_swa", static_cast<float>(p.rope_local_theta));
  w.add(a + "attention.layer_norm_rms_epsilon", static_cast<float>(p.rms_eps));
  w.add(a + "attention.key_length", static_cast<uint32_t>(p.head_dim));
  w.add(a + "attention.value_length", static_cast<uint32_t>(p.head_dim));
  w.add("general.file_type", file_type_id(out_type));
  if (p.final_softcap) w.add(a + "final_logit_softcapping", static_cast<float>(*p.final_softcap));
  if (p.write_sliding_window) w.add(a + "attention.sliding_window", static_cast<uint32_t>(p.sliding_window));
  w.add("general.quantization_version", uint32_t{2});

  w.add("tokenizer.ggml.model", std::string("llama"));
  w.add("tokenizer.ggml.pre", std::string("default"));
  w.add("tokenizer.ggml.tokens", vocab.tokens);
  w.add("tokenizer.ggml.scores", std::move(vocab.scores));
  w.add("tokenizer.ggml.token_type", std::move(vocab.types));
  add_special_vocab(w, hf_dir, tokenizer_config, config, vocab.tokens);
  w.add("tokenizer.ggml.add_space_prefix", false);

  ConvertResult result;
  result.architecture = arch;
  result.out_type = out_type;
  result.tensor_count = plan.plan.size();
  for (const Planned& t : plan.plan)
    result.tensor_bytes += w.tensor_nbytes(w.add_tensor(t.name, t.out, t.shape));

  Progress progress;
  progress.tensors_total = plan.plan.size();
  progress.bytes_total = result.tensor_bytes;
  std::vector<float> floats;
  std::vector<std::byte> buffer;
  w.write(out_path, [&](size_t i, std::ostream& out) {
    write_tensor(plan.plan[i], out, floats, buffer);
    progress.tensors_done = i + 1;
    progress.bytes_done += w.tensor_nbytes(i);
    if (options.progress) options.progress(progress);
  });
  return result;
}

}  // namespace ge::convert
