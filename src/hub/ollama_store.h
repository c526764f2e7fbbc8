// Ollama's model store ($OLLAMA_MODELS or ~/.ollama/models), read in place:
//   manifests/<host>/<namespace>/<model>/<tag>   an OCI-style manifest (JSON) listing the model's layers
//   blobs/sha256-<hex>                           each layer's bytes, named by digest
// The layer of media type application/vnd.ollama.image.model is the GGUF file; a
// application/vnd.ollama.image.projector layer (vision models) is llama.cpp's mmproj file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ge::hub {

// $OLLAMA_MODELS, else ~/.ollama/models (where the Ollama server keeps them).
std::filesystem::path ollama_models_dir();

// An Ollama model name as Ollama parses it: "gemma3" is registry.ollama.ai/library/gemma3:latest,
// "user/model:tag" lives in the namespace "user", "host/namespace/model:tag" on another registry.
struct OllamaName {
  std::string host = "registry.ollama.ai";
  std::string ns = "library";
  std::string model;
  std::string tag = "latest";
  std::string display() const;  // the short form Ollama prints ("gemma3:1b", "user/model:latest")
  std::filesystem::path manifest(const std::filesystem::path& store) const;
};

// nullopt for a name with empty or "."/".." parts or characters outside letters, digits, '_', '-', '.'.
std::optional<OllamaName> parse_ollama_name(std::string_view text);

struct OllamaModel {
  std::filesystem::path gguf;       // the model layer's blob
  std::filesystem::path projector;  // the projector layer's blob; empty when the model has none
  uint64_t size_bytes = 0;          // every layer, as `ollama list` counts
};

// Reads a manifest; throws naming the manifest when it is not JSON, has no model layer, or names a blob
// the store does not hold.
OllamaModel read_ollama_manifest(const std::filesystem::path& store, const std::filesystem::path& manifest);

struct StoredOllamaModel {
  OllamaName name;
  OllamaModel model;
};
// Every manifest in the store, sorted by name; manifests that cannot be read are left out.
std::vector<StoredOllamaModel> list_ollama_store(const std::filesystem::path& store);

}  // namespace ge::hub
