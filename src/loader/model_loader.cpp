#include "loader/model_loader.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/json_file.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "loader/gguf_model.h"
#include "loader/mmproj.h"
#include "models/gemma/model.h"
#include "models/gemma3n/model.h"
#include "models/gemma4/model.h"
#include "models/quantization_config.h"

namespace ge::loader {

namespace {

std::vector<int32_t> eos_ids(const nlohmann::json& j, const std::string& source) {
  const auto& e = j["eos_token_id"];
  std::vector<int32_t> ids;
  if (e.is_number_integer())
    ids.push_back(e.get<int32_t>());
  else if (e.is_array())
    for (const auto& v : e) {
      if (!v.is_number_integer()) throw std::runtime_error(source + ": eos_token_id: not a list of integers");
      ids.push_back(v.get<int32_t>());
    }
  else
    throw std::runtime_error(source + ": eos_token_id: must be an integer or a list of integers");
  return ids;
}

// A length limit: absent or null when not set, else a non-negative integer.
std::optional<int64_t> token_count(const nlohmann::json& g, const char* field, const std::string& source) {
  const auto it = g.find(field);
  if (it == g.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<int64_t>() < 0)
    throw std::runtime_error(source + ": " + field + ": must be a non-negative integer");
  return it->get<int64_t>();
}

void read_sampling(const nlohmann::json& g, runtime::SamplingParams& s) {
  // transformers samples only when do_sample is true; otherwise generation is greedy.
  const bool do_sample = g.value("do_sample", false);
  s.temperature = do_sample ? g.value("temperature", 1.0f) : 0.0f;
  s.top_k = g.value("top_k", 0);
  s.top_p = g.value("top_p", 1.0f);
  s.min_p = g.value("min_p", 0.0f);
  s.repeat_penalty = g.value("repetition_penalty", 1.0f);
}

int32_t vocabulary_id(const Tokenizer& tokenizer, const std::string& piece, const std::filesystem::path& path) {
  const auto id = tokenizer.find(piece);
  if (!id) throw std::runtime_error(path.string() + ": the vocabulary has no " + piece + " token, so it cannot read images");
  return *id;
}

// The vision tower of a GGUF text model, from a llama.cpp clip file; the processor resizes to the tower's
// size and normalizes with the file's mean and std, as llama.cpp's mtmd does.
std::unique_ptr<VisionPart> mmproj_vision(const std::filesystem::path& mmproj, const std::filesystem::path& text_path,
                                          const Tokenizer& tokenizer, int64_t text_hidden) {
  auto file = std::make_unique<formats::GgufFile>(mmproj);
  auto vision = std::make_unique<VisionPart>();
  vision->config = vision_config_from_mmproj(
      *file, text_hidden, text_path.filename().string(), vocabulary_id(tokenizer, "<image_soft_token>", text_path),
      vocabulary_id(tokenizer, "<start_of_image>", text_path), vocabulary_id(tokenizer, "<end_of_image>", text_path));
  const ImageNormalization norm = image_normalization_from_mmproj(*file);
  vision->processor.height = vision->processor.width = vision->config.vision.image_size;
  for (int c = 0; c < 3; ++c) {
    vision->processor.image_mean[c] = norm.mean[c];
    vision->processor.image_std[c] = norm.std_dev[c];
  }
  vision->norm_adds_one = false;
  vision->own_tensors = hf_named_vision_tensors(std::move(file));
  vision->tensors = vision->own_tensors.get();
  return vision;
}

// Maps the pages of every tensor but those `skip` names now, rather than on first touch in the first
// forward pass.
void populate(const TensorSource& tensors, bool (*skip)(std::string_view) = nullptr) {
  for (const Tensor* t : tensors.all())
    if (!skip || !skip(t->name)) formats::populate_pages(t->data, t->nbytes);
}

bool is_per_layer_table(std::string_view name) {
  return name.ends_with("embed_tokens_per_layer.weight") || name == "per_layer_token_embd.weight";
}

// Gemma 4's stacked experts, as a folder and as a GGUF file name them.
bool is_expert_tensor(std::string_view name) {
  return name.find(".experts.") != std::string_view::npos || name.find("_exps.") != std::string_view::npos;
}

// What a Gemma 3n or 4 text model leaves unmapped: the audio and vision towers (never run), the per-layer
// embedding table (most of the model, read one row per token: its pages come in as tokens use them), and
// the experts (most of a MoE model: read once where the fast path repacks them, else as tokens are routed).
bool gemma3n_unmapped(std::string_view name) {
  return name.starts_with("model.audio_tower.") || name.starts_with("model.vision_tower.") ||
         is_per_layer_table(name) || is_expert_tensor(name);
}

// Maps a Gemma 3n's (or 4's) weights but its per-layer table, whose pages are marked for random access: a token's
// row then reads its own pages from disk, without readahead (E2B q8_0, 1,000 random ids with the file out
// of the page cache: resident memory +19 MiB instead of +76 MiB). Pages the page cache already holds are
// still mapped 64 KB around each fault (the kernel's fault-around): +170 MiB for the same prompt, clean
// file pages the kernel takes back under pressure.
void map_gemma3n(const TensorSource& tensors) {
  populate(tensors, gemma3n_unmapped);
  for (const Tensor* t : tensors.all())
    if (is_per_layer_table(t->name)) formats::advise_random_access(t->data, t->nbytes);
}

// Gemma 3n or Gemma 4 from GGUF: as from a folder, the per-layer table is read in place.
LoadedModel load_per_layer_input_gguf(const std::filesystem::path& path, std::unique_ptr<formats::GgufFile> file,
                                      int64_t max_chunk, const std::filesystem::path& mmproj) {
  const bool gemma4 = file->metadata().get_string("general.architecture") == "gemma4";
  if (!mmproj.empty())
    throw std::runtime_error("--mmproj " + mmproj.string() + ": " + (gemma4 ? "Gemma 4" : "Gemma 3n") +
                             " reads text only here (its vision tower is not run)");
  map_gemma3n(*file);
  Tokenizer tokenizer = tokenizer_from_gguf(*file);
  GenerationDefaults defaults;
  defaults.eos_ids = end_of_generation_ids(*file, tokenizer);
  defaults.sampling.temperature = 0;
  std::unique_ptr<TensorSource> tensors;
  std::unique_ptr<nn::LayerSource> layers;
  std::unique_ptr<models::CausalLM> model;
  if (gemma4) {
    gemma4::Config config = gemma4_config_from_gguf(*file, tokenizer);
    tensors = gemma4_hf_named_tensors(std::move(file));
    layers = std::make_unique<nn::LayerSource>(*tensors);
    model = std::make_unique<gemma4::Model>(std::move(config), *layers, max_chunk);
  } else {
    gemma3n::Config config = gemma3n_config_from_gguf(*file);
    tensors = gemma3n_hf_named_tensors(std::move(file));
    layers = std::make_unique<nn::LayerSource>(*tensors);
    model = std::make_unique<gemma3n::Model>(std::move(config), *layers, max_chunk);
  }
  return LoadedModel{path, std::move(tensors), std::move(layers), std::move(model), std::move(tokenizer),
                     std::move(defaults), nullptr, gemma4 ? runtime::ChatFormat::kGemma4 : runtime::ChatFormat::kGemma};
}

// A GGUF file carries no sampling settings: generation is greedy, as for a folder without
// generation_config.json.
LoadedModel load_gguf_model(const std::filesystem::path& path, int64_t max_chunk, const std::filesystem::path& mmproj) {
  auto file = std::make_unique<formats::GgufFile>(path);
  const auto arch = file->metadata().find<std::string>("general.architecture");
  if (arch == "gemma3n" || arch == "gemma4") return load_per_layer_input_gguf(path, std::move(file), max_chunk, mmproj);
  populate(*file);
  gemma::Config config = config_from_gguf(*file);
  Tokenizer tokenizer = tokenizer_from_gguf(*file);
  std::unique_ptr<VisionPart> vision;
  if (!mmproj.empty()) {
    vision = mmproj_vision(mmproj, path, tokenizer, config.hidden_size);
    config.image_block_tokens = vision->config.mm_tokens_per_image;
  }
  GenerationDefaults defaults;
  defaults.eos_ids = end_of_generation_ids(*file, tokenizer);
  defaults.sampling.temperature = 0;
  auto tensors = hf_named_tensors(std::move(file), config.family);
  auto layers = std::make_unique<nn::LayerSource>(*tensors);
  auto model = std::make_unique<gemma::Model>(std::move(config), *layers, max_chunk);
  return LoadedModel{path,           std::move(tensors),   std::move(layers),  std::move(model),
                     std::move(tokenizer), std::move(defaults), std::move(vision)};
}

}  // namespace

gemma::Config load_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  return gemma::resolve_config(formats::read_json_file(path), path.string());
}

nn::QuantizationConfig load_quantization_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  return models::read_quantization_config(formats::read_json_file(path), path.string());
}

GenerationDefaults load_generation_defaults(const std::filesystem::path& dir) {
  GenerationDefaults d;
  const auto gen_path = dir / "generation_config.json";
  if (std::filesystem::exists(gen_path)) {
    const auto g = formats::read_json_file(gen_path);
    if (g.contains("eos_token_id")) d.eos_ids = eos_ids(g, gen_path.string());
    read_sampling(g, d.sampling);
    d.max_new_tokens = token_count(g, "max_new_tokens", gen_path.string());
    d.max_length = token_count(g, "max_length", gen_path.string());
  }
  if (d.eos_ids.empty()) {
    const auto config_path = dir / "config.json";
    const auto c = formats::read_json_file(config_path);
    if (c.contains("eos_token_id")) d.eos_ids = eos_ids(c, config_path.string());
  }
  return d;
}

int64_t GenerationDefaults::answer_limit(int64_t prompt_tokens) const {
  if (max_new_tokens) return *max_new_tokens;
  if (max_length) return std::max<int64_t>(0, *max_length - prompt_tokens);
  return -1;
}

bool is_gguf(const std::filesystem::path& path) {
  if (!std::filesystem::is_regular_file(path)) return false;
  if (path.extension() == ".gguf") return true;
  // Ollama's blobs (sha256-<hex>) have no extension: the magic tells.
  char magic[4] = {};
  std::ifstream(path, std::ios::binary).read(magic, sizeof magic);
  return std::string_view(magic, sizeof magic) == "GGUF";
}

siglip::Gemma3VisionEncoder& VisionPart::bind() {
  if (!encoder) {
    const nn::LayerSource source(*tensors);
    encoder = std::make_unique<siglip::Gemma3VisionEncoder>(config, source, norm_adds_one);
  }
  return *encoder;
}

namespace {

// A folder's vision tower, if its config.json has one; its tensors are bound later.
std::unique_ptr<VisionPart> folder_vision(const std::filesystem::path& dir, const nlohmann::json& config,
                                          int64_t text_hidden) {
  if (!siglip::has_vision_config(config)) return nullptr;
  auto vision = std::make_unique<VisionPart>();
  vision->config = siglip::resolve_gemma3_vision_config(config, text_hidden, (dir / "config.json").string());
  vision->processor = runtime::load_image_processor_config(dir);
  if (!std::filesystem::exists(dir / "preprocessor_config.json"))  // the processor resizes to the tower's size
    vision->processor.height = vision->processor.width = vision->config.vision.image_size;
  return vision;
}

}  // namespace

ImagePreprocessing load_image_preprocessing(const std::filesystem::path& path, const std::filesystem::path& mmproj) {
  if (is_gguf(path)) {
    if (mmproj.empty()) throw std::runtime_error(path.string() + ": a GGUF model reads images with its mmproj file (--mmproj)");
    const formats::GgufFile text(path);
    const auto vision = mmproj_vision(mmproj, path, tokenizer_from_gguf(text), config_from_gguf(text).hidden_size);
    return {vision->processor, vision->config.mm_tokens_per_image};
  }
  const auto config_path = path / "config.json";
  const nlohmann::json config = formats::read_json_file(config_path);
  const auto vision = folder_vision(path, config, gemma::resolve_config(config, config_path.string()).hidden_size);
  if (!vision) throw std::runtime_error(config_path.string() + ": no vision_config: this model reads text only");
  return {vision->processor, vision->config.mm_tokens_per_image};
}

// Gemma 3n or Gemma 4 from a folder: the text decoder (and 3n's embedders of image and audio ids); the audio
// and vision towers are never mapped.
LoadedModel load_per_layer_input_folder(const std::filesystem::path& dir, const nlohmann::json& config_json,
                                        int64_t max_chunk) {
  auto tensors = std::make_unique<formats::SafetensorsCheckpoint>(dir);
  map_gemma3n(*tensors);
  auto layers = std::make_unique<nn::LayerSource>(*tensors, load_quantization_config(dir));
  const std::string source = (dir / "config.json").string();
  std::unique_ptr<models::CausalLM> model;
  if (gemma4::is_gemma4(config_json))
    model = std::make_unique<gemma4::Model>(gemma4::resolve_config(config_json, source), *layers, max_chunk);
  else
    model = std::make_unique<gemma3n::Model>(gemma3n::resolve_config(config_json, source), *layers, max_chunk);
  auto tokenizer = Tokenizer::load(dir);
  auto defaults = load_generation_defaults(dir);
  if (defaults.eos_ids.empty()) defaults.eos_ids.push_back(tokenizer.eos_id());
  return LoadedModel{dir, std::move(tensors), std::move(layers), std::move(model), std::move(tokenizer),
                     std::move(defaults), nullptr,
                     gemma4::is_gemma4(config_json) ? runtime::ChatFormat::kGemma4 : runtime::ChatFormat::kGemma};
}

LoadedModel load_model(const std::filesystem::path& dir, int64_t max_chunk, const std::filesystem::path& mmproj) {
  if (is_gguf(dir)) return load_gguf_model(dir, max_chunk, mmproj);
  if (!std::filesystem::is_directory(dir))
    throw std::runtime_error(dir.string() +
                             ": not a model folder (config.json, *.safetensors) or a .gguf file");
  if (!mmproj.empty())
    throw std::runtime_error("--mmproj " + mmproj.string() + ": only a GGUF text model takes an mmproj file; " +
                             dir.string() + " is a folder, whose vision tower (if any) is in its own weights");
  const auto config_path = dir / "config.json";
  const nlohmann::json config_json = formats::read_json_file(config_path);
  if (gemma3n::is_gemma3n(config_json) || gemma4::is_gemma4(config_json))
    return load_per_layer_input_folder(dir, config_json, max_chunk);
  // A multimodal checkpoint maps its text weights now and its vision weights on the first image: text-only
  // prompts never read them.
  const bool multimodal = siglip::has_vision_config(config_json);
  auto tensors = std::make_unique<formats::SafetensorsCheckpoint>(dir, /*populate=*/!multimodal);
  if (multimodal)
    for (const Tensor* t : tensors->all())
      if (!siglip::is_vision_tensor(t->name)) formats::populate_pages(t->data, t->nbytes);
  auto layers = std::make_unique<nn::LayerSource>(*tensors, load_quantization_config(dir));
  auto model = std::make_unique<gemma::Model>(gemma::resolve_config(config_json, config_path.string()), *layers, max_chunk);
  auto tokenizer = Tokenizer::load(dir);
  auto defaults = load_generation_defaults(dir);
  if (defaults.eos_ids.empty()) defaults.eos_ids.push_back(tokenizer.eos_id());
  auto vision = folder_vision(dir, config_json, model->shape().hidden_size);
  if (vision) vision->tensors = tensors.get();
  return LoadedModel{dir,  std::move(tensors),   std::move(layers),  std::move(model),
                     std::move(tokenizer), std::move(defaults), std::move(vision)};
}

}  // namespace ge::loader

namespace ge::loader {

Tokenizer load_tokenizer(const std::filesystem::path& path) {
  if (is_gguf(path)) return tokenizer_from_gguf(formats::GgufFile(path));
  return Tokenizer::load(path);
}

}  // namespace ge::loader
