// `gemma list`: the models in the Hugging Face cache and in Ollama's store, each under the name -m takes,
// with its size, family (config.json's model_type, a GGUF file's general.architecture) and dtype or
// quantization.
#include <cstdio>
#include <map>

#include "cli/common.h"
#include "formats/gguf.h"
#include "formats/json_file.h"
#include "hub/hf_cache.h"
#include "hub/model_location.h"
#include "hub/ollama_store.h"

namespace ge::cli {

namespace {

namespace fs = std::filesystem;

struct Row {
  std::string name;
  uint64_t bytes = 0;
  std::string family = "?", dtype = "?";
};

// llama.cpp's llama_ftype names, what `ollama list`/`ollama show` print as the quantization.
std::string file_type_name(uint32_t id) {
  static const std::map<uint32_t, const char*> kNames = {
      {0, "F32"},     {1, "F16"},     {2, "Q4_0"},      {3, "Q4_1"},    {7, "Q8_0"},     {8, "Q5_0"},
      {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"},   {12, "Q3_K_M"}, {13, "Q3_K_L"},  {14, "Q4_K_S"},
      {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},   {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"},
      {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"},  {24, "IQ1_S"},  {25, "IQ4_NL"},  {26, "IQ3_S"},
      {27, "IQ3_M"},  {28, "IQ2_S"},  {29, "IQ2_M"},    {30, "IQ4_XS"}, {31, "IQ1_M"},   {32, "BF16"},
      {36, "TQ1_0"},  {37, "TQ2_0"},  {38, "MXFP4_MOE"}};
  const auto it = kNames.find(id);
  return it != kNames.end() ? it->second : "file_type " + std::to_string(id);
}

void describe_gguf(const fs::path& file, Row& row) {
  const formats::GgufFile gguf(file);
  const auto& meta = gguf.metadata();
  if (auto arch = meta.find<std::string>("general.architecture")) row.family = *arch;
  if (auto type = meta.find<uint32_t>("general.file_type")) row.dtype = file_type_name(*type);
}

// MLX's "quantization" (bits, group size, mode), another quantizer's quant_method, else the weights' dtype
// (transformers writes torch_dtype, newer versions dtype; multimodal checkpoints inside text_config).
std::string folder_dtype(const nlohmann::json& config) {
  if (const auto q = config.find("quantization"); q != config.end() && q->is_object())
    return "mlx " + q->value("mode", std::string("affine")) + " " + std::to_string(q->value("bits", 0)) +
           "-bit g" + std::to_string(q->value("group_size", 0));
  if (const auto q = config.find("quantization_config"); q != config.end() && q->is_object())
    return q->value("quant_method", std::string("quantized"));
  for (const nlohmann::json* c :
       {&config, config.contains("text_config") ? &config["text_config"] : nullptr}) {
    if (!c || !c->is_object()) continue;
    for (const char* key : {"torch_dtype", "dtype"})
      if (const auto d = c->find(key); d != c->end() && d->is_string()) return d->get<std::string>();
  }
  return "?";
}

void describe_folder(const fs::path& dir, Row& row) {
  const nlohmann::json config = formats::read_json_file(dir / "config.json");
  row.family = config.value("model_type", std::string("?"));
  row.dtype = folder_dtype(config);
}

uint64_t folder_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();  // follows the snapshot's symlinks into blobs/
  return n;
}

// A model that cannot be read still gets its row: the user sees it is there, and "?" where it is unreadable.
void describe(const fs::path& path, Row& row) {
  try {
    if (fs::is_directory(path))
      describe_folder(path, row);
    else
      describe_gguf(path, row);
  } catch (const std::exception&) {
  }
}

std::vector<Row> hf_rows() {
  std::vector<Row> rows;
  for (const auto& snap : hub::list_hf_cache(hub::hf_cache_dir())) {
    Row row{snap.name, folder_bytes(snap.path)};
    try {
      describe(hub::model_in_snapshot(snap.path, snap.name).path, row);
    } catch (const std::exception&) {
      row.dtype = "several GGUF files";
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<Row> ollama_rows() {
  std::vector<Row> rows;
  for (const auto& m : hub::list_ollama_store(hub::ollama_models_dir())) {
    Row row{"ollama:" + m.name.display(), m.model.size_bytes};
    describe(m.model.gguf, row);
    rows.push_back(std::move(row));
  }
  return rows;
}

void list_models() {
  std::vector<Row> rows = hf_rows();
  for (Row& r : ollama_rows()) rows.push_back(std::move(r));
  if (rows.empty()) {
    std::fprintf(stderr, "no models in %s or %s; get one with: gemma pull google/gemma-3-270m-it\n",
                 hub::hf_cache_dir().c_str(), hub::ollama_models_dir().c_str());
    return;
  }
  std::printf("%-48s %10s  %-14s %s\n", "NAME", "SIZE", "FAMILY", "DTYPE");
  for (const Row& r : rows)
    std::printf("%-48s %7.1f MB  %-14s %s\n", r.name.c_str(), static_cast<double>(r.bytes) / 1e6,
                r.family.c_str(), r.dtype.c_str());
}

}  // namespace

void add_list_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("list", "List the models in the Hugging Face cache and Ollama's store");
  cmd->callback(list_models);
}

}  // namespace ge::cli
