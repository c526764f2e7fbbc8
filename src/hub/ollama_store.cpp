#include "hub/ollama_store.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <stdexcept>

#include "formats/json_file.h"

namespace ge::hub {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kDefaultHost = "registry.ollama.ai", kDefaultNamespace = "library";
constexpr std::string_view kModelLayer = "application/vnd.ollama.image.model";
constexpr std::string_view kProjectorLayer = "application/vnd.ollama.image.projector";

bool valid_part(std::string_view part) {
  return !part.empty() && part != "." && part != ".." && std::all_of(part.begin(), part.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// "sha256:<64 hex>" -> blobs/sha256-<hex>; anything else could point outside the store.
fs::path blob_path(const fs::path& store, const std::string& digest, const fs::path& manifest) {
  const bool ok = digest.size() == 7 + 64 && digest.starts_with("sha256:") &&
                  std::all_of(digest.begin() + 7, digest.end(), [](char c) { return std::isxdigit(c); });
  if (!ok)
    throw std::runtime_error(manifest.string() + ": layer digest '" + digest + "' is not sha256:<64 hex>");
  fs::path blob = store / "blobs" / ("sha256-" + digest.substr(7));
  if (!fs::is_regular_file(blob))
    throw std::runtime_error(manifest.string() + ": its layer " + digest + " is missing (no " +
                             blob.string() + ")");
  return blob;
}

}  // namespace

fs::path ollama_models_dir() {
  if (const char* v = std::getenv("OLLAMA_MODELS"); v && *v) return v;
  const char* home = std::getenv("HOME");
  if (!home || !*home)
    throw std::runtime_error("HOME is not set: cannot find Ollama's store (set OLLAMA_MODELS)");
  return fs::path(home) / ".ollama" / "models";
}

std::string OllamaName::display() const {
  std::string prefix;
  if (host != kDefaultHost)
    prefix = host + "/" + ns + "/";
  else if (ns != kDefaultNamespace)
    prefix = ns + "/";
  return prefix + model + ":" + tag;
}

fs::path OllamaName::manifest(const fs::path& store) const {
  return store / "manifests" / host / ns / model / tag;
}

std::optional<OllamaName> parse_ollama_name(std::string_view text) {
  OllamaName name;
  const auto last_slash = text.rfind('/');
  const auto colon = text.rfind(':');
  if (colon != std::string_view::npos && (last_slash == std::string_view::npos || colon > last_slash)) {
    name.tag = text.substr(colon + 1);
    text = text.substr(0, colon);
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const auto end = text.find('/', start);
    parts.emplace_back(text.substr(start, end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (parts.size() > 3) return std::nullopt;
  name.model = parts.back();
  if (parts.size() >= 2) name.ns = parts[parts.size() - 2];
  if (parts.size() == 3) name.host = parts[0];
  if (!valid_part(name.model) || !valid_part(name.ns) || !valid_part(name.host) || !valid_part(name.tag))
    return std::nullopt;
  return name;
}

OllamaModel read_ollama_manifest(const fs::path& store, const fs::path& manifest) {
  const nlohmann::json m = formats::read_json_file(manifest);
  OllamaModel model;
  if (m.contains("config") && m["config"].is_object())
    model.size_bytes += m["config"].value("size", uint64_t{0});
  if (!m.contains("layers") || !m["layers"].is_array())
    throw std::runtime_error(manifest.string() + ": no 'layers' list");
  for (const auto& layer : m["layers"]) {
    const std::string type = layer.value("mediaType", "");
    model.size_bytes += layer.value("size", uint64_t{0});
    if (type == kModelLayer)
      model.gguf = blob_path(store, layer.value("digest", ""), manifest);
    else if (type == kProjectorLayer)
      model.projector = blob_path(store, layer.value("digest", ""), manifest);
  }
  if (model.gguf.empty())
    throw std::runtime_error(manifest.string() + ": no layer of type " + std::string(kModelLayer));
  return model;
}

std::vector<StoredOllamaModel> list_ollama_store(const fs::path& store) {
  std::vector<StoredOllamaModel> found;
  const fs::path manifests = store / "manifests";
  if (!fs::is_directory(manifests)) return found;
  for (const auto& entry : fs::recursive_directory_iterator(manifests)) {
    if (!entry.is_regular_file()) continue;
    const fs::path rel = entry.path().lexically_relative(manifests);
    const std::vector<fs::path> parts(rel.begin(), rel.end());
    if (parts.size() != 4) continue;  // host/namespace/model/tag
    OllamaName name{parts[0].string(), parts[1].string(), parts[2].string(), parts[3].string()};
    try {
      found.push_back({std::move(name), read_ollama_manifest(store, entry.path())});
    } catch (const std::exception&) {
      // A manifest Ollama is still writing, or one of another kind (no model layer): not a model to list.
    }
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.name.display() < b.name.display(); });
  return found;
}

}  // namespace ge::hub
