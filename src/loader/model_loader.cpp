#include "loader/model_loader.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/json_file.h"
#include "formats/safetensors.h"
#include "loader/gguf_model.h"
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

void read_sampling(const nlohmann::json& g, runtime::SamplingParams& s) {
  // transformers samples only when do_sample is true; otherwise generation is greedy.
  const bool do_sample = g.value("do_sample", false);
  s.temperature = do_sample ? g.value("temperature", 1.0f) : 0.0f;
  s.top_k = g.value("top_k", 0);
  s.top_p = g.value("top_p", 1.0f);
  s.min_p = g.value("min_p", 0.0f);
  s.repeat_penalty = g.value("repetition_penalty", 1.0f);
}

// A GGUF file carries no sampling settings: generation is greedy, as for a folder without
// generation_config.json.
LoadedModel load_gguf_model(const std::filesystem::path& path, int64_t max_chunk) {
  auto file = std::make_unique<formats::GgufFile>(path, /*populate=*/true);
  gemma::Config config = config_from_gguf(*file);
  Tokenizer tokenizer = tokenizer_from_gguf(*file);
  GenerationDefaults defaults;
  defaults.eos_ids = end_of_generation_ids(*file, tokenizer);
  defaults.sampling.temperature = 0;
  auto tensors = hf_named_tensors(std::move(file), config.family);
  auto layers = std::make_unique<nn::LayerSource>(*tensors);
  auto model = std::make_unique<gemma::Model>(std::move(config), *layers, max_chunk);
  return LoadedModel{path,           std::move(tensors),   std::move(layers),  std::move(model),
                     std::move(tokenizer), std::move(defaults)};
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
  }
  if (d.eos_ids.empty()) {
    const auto config_path = dir / "config.json";
    const auto c = formats::read_json_file(config_path);
    if (c.contains("eos_token_id")) d.eos_ids = eos_ids(c, config_path.string());
  }
  return d;
}

bool is_gguf(const std::filesystem::path& path) {
  return std::filesystem::is_regular_file(path) && path.extension() == ".gguf";
}

LoadedModel load_model(const std::filesystem::path& dir, int64_t max_chunk) {
  if (is_gguf(dir)) return load_gguf_model(dir, max_chunk);
  if (!std::filesystem::is_directory(dir))
    throw std::runtime_error(dir.string() +
                             ": not a model folder (config.json, *.safetensors) or a .gguf file");
  auto tensors = std::make_unique<formats::SafetensorsCheckpoint>(dir, /*populate=*/true);
  auto layers = std::make_unique<nn::LayerSource>(*tensors, load_quantization_config(dir));
  auto model = std::make_unique<gemma::Model>(load_config(dir), *layers, max_chunk);
  auto tokenizer = Tokenizer::load(dir);
  auto defaults = load_generation_defaults(dir);
  if (defaults.eos_ids.empty()) defaults.eos_ids.push_back(tokenizer.eos_id());
  return LoadedModel{dir,  std::move(tensors),   std::move(layers),  std::move(model),
                     std::move(tokenizer), std::move(defaults)};
}

}  // namespace ge::loader

namespace ge::loader {

Tokenizer load_tokenizer(const std::filesystem::path& path) {
  if (is_gguf(path)) return tokenizer_from_gguf(formats::GgufFile(path));
  return Tokenizer::load(path);
}

}  // namespace ge::loader
