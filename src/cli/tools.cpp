// `gemma tokenize`, `gemma logits`, `gemma inspect`: the tools users and tests lean on.
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/common.h"
#include "formats/atomic_output.h"
#include "formats/gguf.h"
#include "formats/json_file.h"
#include "formats/safetensors.h"
#include "loader/model_loader.h"
#include "models/gemma/config.h"
#include "models/gemma3n/config.h"
#include "models/gemma4/config.h"
#include "runtime/chat_template.h"
#include "runtime/prompt_images.h"
#include "tokenizer/tokenizer.h"

namespace ge::cli {

namespace {

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      throw std::runtime_error("--ids: '" + item + "' is not a token id");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

struct TokenizeOptions {
  std::string model = default_model_dir();
  std::string text;
  bool no_bos = false;
  bool ids_only = false;
};

void tokenize(const TokenizeOptions& o) {
  const Tokenizer tok = loader::load_tokenizer(locate(o.model).path);
  const auto ids = tok.encode(o.text, !o.no_bos && tok.add_bos_default());
  if (o.ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
    std::cout << "\n";
    return;
  }
  for (int32_t id : ids)
    std::printf("%8d -> '%.*s'\n", id, static_cast<int>(tok.piece(id).size()), tok.piece(id).data());
}

struct LogitsOptions {
  std::string model = default_model_dir();
  std::string ids;
  std::string prompt;
  std::string output;
  int threads = default_threads();
  int64_t batch = 256;
  PrecisionFlags precision;
  std::string kv_type = "f32";
  std::vector<std::string> images;
  bool pan_and_scan = false;
  std::string mmproj;
};

std::vector<runtime::PreparedImage> prepare_images(loader::LoadedModel& m, const std::string& model,
                                                   const std::vector<std::string>& paths, bool pan_and_scan) {
  std::vector<runtime::PreparedImage> images;
  if (paths.empty()) return images;
  const loader::VisionPart& v = vision_of(m, model);
  for (const std::string& path : paths)
    images.push_back(runtime::prepare_image_file(path, v.processor, pan_and_scan || v.processor.do_pan_and_scan,
                                                 v.config.mm_tokens_per_image));
  return images;
}

// Encodes each image (each crop) into the features of the next run of <image_soft_token> ids.
std::vector<models::EmbeddingBlock> image_blocks(loader::LoadedModel& m, kernels::ThreadPool& pool,
                                                const std::vector<int32_t>& ids,
                                                const std::vector<runtime::PreparedImage>& images,
                                                std::vector<float>& features) {
  if (images.empty()) return {};
  siglip::Gemma3VisionEncoder& encoder = m.vision->bind();
  const auto parts = runtime::prompt_parts(images);
  const int64_t per_image = encoder.config().mm_tokens_per_image, hidden = m.model->shape().hidden_size;
  const auto runs = runtime::find_image_runs(ids, encoder.config().image_token_id, per_image, parts.size());
  features.resize(parts.size() * per_image * hidden);
  std::vector<models::EmbeddingBlock> blocks;
  for (size_t i = 0; i < parts.size(); ++i) {
    float* f = features.data() + i * per_image * hidden;
    encoder.encode(parts[i].pixels, pool, f);
    blocks.push_back({runs[i].offset, runs[i].count, f});
  }
  return blocks;
}

void logits(const LogitsOptions& o) {
  kernels::ThreadPool pool(o.threads);
  const hub::ModelLocation where = locate(o.model, o.mmproj);
  auto m = loader::load_model(where.path, o.batch, where.mmproj);
  apply_precision(*m.model, o.precision);
  if (o.ids.empty() && o.prompt.empty()) throw std::runtime_error("no tokens: give --ids or a non-empty -p");
  const auto images = prepare_images(m, o.model, o.images, o.pan_and_scan);
  // -p text with images: each <start_of_image> in it expands as the processor expands it.
  const auto ids = o.ids.empty() ? m.tokenizer.encode(images.empty() ? o.prompt
                                                                      : runtime::expand_image_markers(
                                                                            o.prompt, runtime::prompt_texts(images)),
                                                      m.tokenizer.add_bos_default())
                                 : parse_ids(o.ids);
  std::vector<float> features;
  const auto blocks = image_blocks(m, pool, ids, images, features);
  const int64_t vocab = m.model->shape().vocab_size;
  std::vector<float> out(ids.size() * vocab);
  auto cache = m.model->make_cache(static_cast<int64_t>(ids.size()), kv_cache_type(o.kv_type));
  m.model->forward(ids, 0, cache, pool, out.data(), true, nullptr, blocks);
  formats::write_atomically(o.output, [&](std::ostream& file) {
    file.write(reinterpret_cast<const char*>(out.data()),
               static_cast<std::streamsize>(out.size() * sizeof(float)));
  });
  std::fprintf(stderr, "wrote %s: [%zu, %" PRId64 "] f32\n", o.output.c_str(), ids.size(), vocab);
}

struct PreprocessOptions {
  std::string model = default_model_dir();
  std::string image;
  bool pan_and_scan = false;
  std::string mmproj;
  std::string output;
};

void preprocess(const PreprocessOptions& o) {
  const hub::ModelLocation where = locate(o.model, o.mmproj);
  const loader::ImagePreprocessing p = loader::load_image_preprocessing(where.path, where.mmproj);
  const auto image = runtime::prepare_image_file(o.image, p.processor, o.pan_and_scan || p.processor.do_pan_and_scan,
                                                 p.mm_tokens_per_image);
  const std::vector<float>& values = image.pixels.data;
  formats::write_atomically(o.output, [&](std::ostream& file) {
    file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  });
  std::printf("images: %lld (the original%s)\nshape: [%lld, 3, %lld, %lld] f32 -> %s\nprompt text: ",
              static_cast<long long>(image.pixels.count), image.pixels.count > 1 ? " and its crops" : "",
              static_cast<long long>(image.pixels.count), static_cast<long long>(image.pixels.height),
              static_cast<long long>(image.pixels.width), o.output.c_str());
  std::fwrite(image.prompt_text.data(), 1, image.prompt_text.size(), stdout);
  std::printf("\n");
}

// One metadata value on one line: long strings cut, arrays summarized by type, count and first items.
std::string describe_value(const formats::GgufValue& value) {
  constexpr size_t kMaxString = 60, kShownItems = 4;
  const auto quote = [&](const std::string& s) {
    std::string shown;
    for (char c : s.substr(0, kMaxString)) shown += c == '\n' ? std::string("\\n") : std::string(1, c);
    return "\"" + shown + "\"" +
           (s.size() > kMaxString ? "... (" + std::to_string(s.size()) + " bytes)" : "");
  };
  const auto number = [](auto x) {
    char buf[32];
    if constexpr (std::is_floating_point_v<decltype(x)>)
      std::snprintf(buf, sizeof buf, "%g", static_cast<double>(x));
    else
      std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(x));
    return std::string(buf);
  };
  return std::visit(
      [&](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return quote(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (requires { v.size(); }) {
          std::string out =
              "[" + formats::gguf_type_name(value) + ", " + std::to_string(v.size()) + " items:";
          for (size_t i = 0; i < std::min(v.size(), kShownItems); ++i) {
            if constexpr (std::is_same_v<typename T::value_type, std::string>)
              out += " " + quote(v[i]);
            else
              out += " " + number(static_cast<typename T::value_type>(v[i]));
          }
          return out + (v.size() > kShownItems ? " ...]" : "]");
        } else {
          return number(v);
        }
      },
      value);
}

void inspect_gguf(const std::filesystem::path& path) {
  const formats::GgufFile file(path);
  const auto tensors = file.all();
  std::printf("GGUF v%u, alignment %u, %zu metadata keys, %zu tensors, data at byte %zu\n", file.version(),
              file.alignment(), file.metadata().entries().size(), tensors.size(), file.data_offset());
  for (const auto& [key, value] : file.metadata().entries())
    std::printf("  %-45s = %s\n", key.c_str(), describe_value(value).c_str());
  for (const Tensor* t : tensors)
    std::printf("%-40s %-5s %-18s at byte %zu\n", t->name.c_str(),
                std::string(dtype_info(t->dtype).name).c_str(), shape_string(t->shape).c_str(),
                file.file_offset(*t));
}

void print_gemma3n_config(const gemma3n::Config& c) {
  std::printf("architecture: gemma3n (text decoder; audio and vision towers not run)\n");
  std::printf("vocab_size %" PRId64 " (per-layer inputs %" PRId64 "), hidden %" PRId64 " (per layer %" PRId64
              "), layers %" PRId64 ", heads %" PRId64 " (kv %" PRId64 "), head_dim %" PRId64 "\n",
              c.vocab_size, c.vocab_size_per_layer_input, c.hidden_size, c.hidden_size_per_layer_input,
              c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim);
  std::printf("altup %" PRId64 " streams (active %" PRId64 "), laurel rank %" PRId64 ", sliding_window %" PRId64
              ", KV shared by the last %" PRId64 " layers\n",
              c.altup_num_inputs, c.altup_active_idx, c.laurel_rank, c.sliding_window, c.num_kv_shared_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const auto& l = c.layers[i];
    std::printf("layer %2" PRId64 ": %-7s mlp %" PRId64 ", sparsity %g, keys and values of layer %" PRId64 "\n", i,
                l.sliding ? "sliding" : "global", l.intermediate_size, l.activation_sparsity, c.kv_source(i));
  }
}

void print_gemma4_config(const gemma4::Config& c) {
  std::printf("architecture: gemma4 (text decoder, dense; vision and audio towers not run)\n");
  std::printf("vocab_size %" PRId64 ", hidden %" PRId64 " (per-layer inputs %" PRId64 "), layers %" PRId64
              ", heads %" PRId64 ", sliding_window %" PRId64 ", KV shared by the last %" PRId64 " layers\n",
              c.vocab_size, c.hidden_size, c.hidden_size_per_layer_input, c.num_layers, c.num_heads,
              c.sliding_window, c.num_kv_shared_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const auto& l = c.layers[i];
    std::printf("layer %2" PRId64 ": %-7s head_dim %" PRId64 " x %" PRId64 " kv heads%s, RoPE on %" PRId64
                " of %" PRId64 " pairs, mlp %" PRId64 ", keys and values of layer %" PRId64 "\n",
                i, l.sliding ? "sliding" : "global", l.head_dim, l.num_kv_heads, l.k_eq_v ? " (V = K)" : "", l.rope.rotated_pairs,
                l.head_dim / 2, l.intermediate_size, c.kv_source(i));
  }
}

void print_gemma_config(const gemma::Config& config) {
  std::printf("architecture: %s (text)\n", config.family_name());
  std::printf("vocab_size %" PRId64 ", hidden %" PRId64 ", intermediate %" PRId64 ", layers %" PRId64
              ", heads %" PRId64 " (kv %" PRId64 "), head_dim %" PRId64 "\n",
              config.vocab_size, config.hidden_size, config.intermediate_size, config.num_layers,
              config.num_heads, config.num_kv_heads, config.head_dim);
  std::printf(
      "rms_norm_eps %g, query_pre_attn_scalar %g, sliding_window %" PRId64
      ", max_position_embeddings %" PRId64 ", tied embeddings %s, final soft-cap %s\n",
      config.rms_norm_eps, config.query_pre_attn_scalar, config.sliding_window,
      config.max_position_embeddings, config.tie_word_embeddings ? "yes" : "no",
      config.final_logit_softcapping ? std::to_string(*config.final_logit_softcapping).c_str() : "none");
  for (size_t i = 0; i < config.layers.size(); ++i) {
    const auto& l = config.layers[i];
    std::printf("layer %2zu: %-7s rope base %g scale %g\n", i, l.sliding ? "sliding" : "global", l.rope_base,
                l.rope_scale);
  }
}

void inspect(const std::string& model) {
  const std::filesystem::path dir = locate(model).path;
  if (std::filesystem::is_regular_file(dir)) return inspect_gguf(dir);
  const auto config_path = dir / "config.json";
  const nlohmann::json config = formats::read_json_file(config_path);
  if (gemma3n::is_gemma3n(config))
    print_gemma3n_config(gemma3n::resolve_config(config, config_path.string()));
  else if (gemma4::is_gemma4(config))
    print_gemma4_config(gemma4::resolve_config(config, config_path.string()));
  else
    print_gemma_config(gemma::resolve_config(config, config_path.string()));
  const formats::SafetensorsCheckpoint ckpt(dir);
  const nn::LayerSource layers(ckpt, loader::load_quantization_config(dir));
  if (const auto& q = layers.quantization(); q.defaults)
    std::printf("quantization: %s, %zu per-layer entries\n", kernels::describe(*q.defaults).c_str(),
                q.per_layer.size());
  int64_t params = 0;
  size_t bytes = 0;
  for (const Tensor* t : ckpt.all()) {
    params += layers.parameter_count(*t);
    bytes += t->nbytes;
    const auto q = layers.quantization_of_tensor(*t);
    std::printf("%-60s %-5s %-16s %zu bytes%s%s\n", t->name.c_str(), std::string(dtype_info(t->dtype).name).c_str(),
                shape_string(t->shape).c_str(), t->nbytes, q ? ", " : "", q ? kernels::describe(*q).c_str() : "");
  }
  std::printf("parameters: %" PRId64 " (%.2f M), %zu bytes\n", params, static_cast<double>(params) / 1e6,
              bytes);
}

}  // namespace

void add_tool_commands(CLI::App& app) {
  auto t = std::make_shared<TokenizeOptions>();
  CLI::App* tok = app.add_subcommand("tokenize", "Print the token ids and pieces of TEXT");
  add_model_option(tok, t->model);  // only its tokenizer files (or a GGUF file's vocabulary) are read
  tok->add_option("text", t->text, "Text to encode")->required();
  tok->add_flag("--no-bos", t->no_bos, "Do not prepend <bos>");
  tok->add_flag("--ids", t->ids_only, "Print only the ids, comma-separated");
  tok->callback([t] { tokenize(*t); });

  auto l = std::make_shared<LogitsOptions>();
  CLI::App* lg =
      app.add_subcommand("logits", "Write the logits of every position as raw f32 [n_tokens, vocab]");
  add_model_option(lg, l->model);
  auto* ids = lg->add_option("--ids", l->ids, "Comma-separated token ids");
  lg->add_option("-p,--prompt", l->prompt, "Text to encode instead of --ids")->excludes(ids);
  lg->add_option("-o,--output", l->output, "Output file")->required();
  lg->add_option("-t,--threads", l->threads, "Threads")->check(CLI::Range(1, 1024));
  lg->add_option("-b,--batch", l->batch, "Tokens per forward step")->check(CLI::Range(1, 8192));
  lg->add_option("--image", l->images,
                 "Image whose features fill the next run of <image_soft_token> ids (repeatable; with -p, each "
                 "<start_of_image> in the text expands as the processor does)");
  lg->add_flag("--pan-and-scan", l->pan_and_scan, "Pan-and-scan crops (each crop fills a run of its own)");
  lg->add_option("--mmproj", l->mmproj, "llama.cpp vision file (clip GGUF) for a GGUF model");
  add_precision_flags(lg, l->precision);
  add_kv_type_option(lg, l->kv_type);
  lg->callback([l] { logits(*l); });

  auto pp = std::make_shared<PreprocessOptions>();
  CLI::App* pre = app.add_subcommand(
      "preprocess", "Write an image's pixel values as the model's processor computes them: raw f32 [n, 3, S, S]");
  add_model_option(pre, pp->model);  // a GGUF model needs --mmproj (or an Ollama projector layer)
  pre->add_option("--image", pp->image, "Image file")->required();
  pre->add_flag("--pan-and-scan", pp->pan_and_scan, "Pan-and-scan crops after the original");
  pre->add_option("--mmproj", pp->mmproj, "llama.cpp vision file (clip GGUF) for a GGUF model");
  pre->add_option("-o,--output", pp->output, "Output file")->required();
  pre->callback([pp] { preprocess(*pp); });

  auto dir = std::make_shared<std::string>();
  CLI::App* in =
      app.add_subcommand("inspect", "Show a checkpoint's resolved config and tensors, or a GGUF file's");
  in->add_option(
        "model", *dir,
        "Model folder or .gguf file, ORG/NAME[@REVISION] from the Hugging Face cache, or ollama:NAME[:TAG]")
      ->required();
  in->callback([dir] { inspect(*dir); });
}

}  // namespace ge::cli
