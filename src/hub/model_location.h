// What `-m` names: a path, a Hugging Face repo in huggingface_hub's cache, or a model in Ollama's store.
#pragma once
#include <filesystem>
#include <string>

namespace ge::hub {

struct ModelLocation {
  std::filesystem::path path;    // a model folder or a GGUF file
  std::filesystem::path mmproj;  // an Ollama model's projector layer; empty for the rest
  std::string name;              // the repo id or Ollama name it was found by; empty for a path
};

// In this order:
//  - a file or folder that exists is that path (a path always wins over a name);
//  - "ollama:NAME[:TAG]" is the model layer of that manifest in Ollama's store (ollama_store.h);
//  - "ORG/NAME[@REVISION]" is that snapshot in the Hugging Face cache (hf_cache.h): its folder, or, for a
//    repo of GGUF files, its one GGUF file (and its mmproj*.gguf file as the projector);
//  - anything else is returned as the path it looks like, for the loader to report.
// A name that is not found throws a message listing where it looked and how to get the model.
ModelLocation locate_model(const std::string& arg);

// What a snapshot folder of the Hugging Face cache holds as a model (the folder, or its one GGUF file), under
// `name`; throws when it holds several GGUF files.
ModelLocation model_in_snapshot(const std::filesystem::path& snapshot, const std::string& name);

}  // namespace ge::hub
