#include "hub/model_location.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <vector>

#include "hub/hf_cache.h"
#include "hub/ollama_store.h"

namespace ge::hub {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kOllamaPrefix = "ollama:";

ModelLocation ollama_model(const std::string& arg) {
  const auto name = parse_ollama_name(std::string_view(arg).substr(kOllamaPrefix.size()));
  if (!name) throw std::runtime_error(arg + ": not an Ollama model name (ollama:NAME or ollama:NAME:TAG)");
  const fs::path store = ollama_models_dir();
  const fs::path manifest = name->manifest(store);
  if (!fs::is_regular_file(manifest))
    throw std::runtime_error(arg + ": not in Ollama's store (looked for " + manifest.string() +
                             "; the store is $OLLAMA_MODELS or ~/.ollama/models). Get it with: ollama pull " +
                             name->display());
  const OllamaModel model = read_ollama_manifest(store, manifest);
  return {model.gguf, model.projector, name->display()};
}

bool is_mmproj_file(const fs::path& file) {
  std::string name = file.filename().string();
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name.starts_with("mmproj");
}

ModelLocation cached_repo(const std::string& arg, const RepoRef& ref) {
  const fs::path cache = hf_cache_dir();
  fs::path looked_at;
  if (auto snapshot = find_snapshot(cache, ref, &looked_at))
    return model_in_snapshot(*snapshot, ref.display());
  throw std::runtime_error(
      arg + ": no such file or folder, and not in the Hugging Face cache (looked for " + looked_at.string() +
      "; the cache is $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub). Get it with: "
      "gemma pull " +
      ref.display());
}

}  // namespace

// A repo of GGUF files (no config.json) stands for its one model file; with several quantizations the user
// picks the file, since guessing would load another model than the one meant.
ModelLocation model_in_snapshot(const fs::path& snapshot, const std::string& name) {
  if (fs::exists(snapshot / "config.json")) return {snapshot, {}, name};
  std::vector<fs::path> models, projectors;
  for (const auto& e : fs::directory_iterator(snapshot))
    if (e.is_regular_file() && e.path().extension() == ".gguf")
      (is_mmproj_file(e.path()) ? projectors : models).push_back(e.path());
  if (models.empty()) return {snapshot, {}, name};  // the loader names what is missing
  if (models.size() > 1 || projectors.size() > 1) {
    models.insert(models.end(), projectors.begin(), projectors.end());
    std::sort(models.begin(), models.end());
    std::string list;
    for (const auto& m : models) list += "\n  " + m.string();
    throw std::runtime_error(name + ": the repo has several GGUF files; give the one to load with -m" + list);
  }
  return {models[0], projectors.empty() ? fs::path() : projectors[0], name};
}

ModelLocation locate_model(const std::string& arg) {
  if (fs::exists(arg)) return {arg, {}, ""};
  if (arg.starts_with(kOllamaPrefix)) return ollama_model(arg);
  if (auto ref = parse_repo_ref(arg)) return cached_repo(arg, *ref);
  return {arg, {}, ""};
}

}  // namespace ge::hub
