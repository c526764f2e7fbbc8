// Pieces shared by the subcommands of the `gemma` binary.
#pragma once
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "hub/model_location.h"
#include "kernels/matmul.h"
#include "loader/model_loader.h"
#include "models/causal_lm.h"

namespace ge::cli {

// The bundled demo model (random weights) used when -m is not given.
std::string default_model_dir();
int default_threads();

// -m (or a command's model argument): a folder, a .gguf file, ORG/NAME[@REV] from the Hugging Face cache or
// ollama:NAME[:TAG] from Ollama's store. `locate` is the one place every command turns it into files
// (hub::locate_model); an explicit --mmproj takes the place of an Ollama model's projector.
void add_model_option(CLI::App* cmd, std::string& model);
hub::ModelLocation locate(const std::string& model, const std::string& mmproj = "");

// --exact: every activation in f32 (the default rounds activations as llama.cpp does where a faster
// kernel takes them); shared by run, logits and bench.
struct PrecisionFlags {
  bool exact = false;
  std::string head_type;  // --head-type q8_0|q4_0: a quantized copy of a float LM head
  bool legacy_fast = false;  // --fast / --fast-prefill: the default now, accepted for one release
};
void add_precision_flags(CLI::App* cmd, PrecisionFlags& flags);
void apply_precision(models::CausalLM& model, const PrecisionFlags& flags);

// --kv-type f32|f16, shared by run and logits.
void add_kv_type_option(CLI::App* cmd, std::string& kv_type);
DType kv_cache_type(const std::string& kv_type);

// Rewrites the terminal's progress line of a tensor-by-tensor writer (convert, quantize): a bar, tensors,
// MB and the time left at the rate so far.
void print_progress(std::chrono::steady_clock::time_point start, size_t tensors_done, size_t tensors_total,
                    uint64_t bytes_done, uint64_t bytes_total);

// The model's vision side, or an error for --image on a model that reads text only (naming --mmproj for a
// GGUF file, whose tower lives in a separate file); `model` is the name the user gave.
loader::VisionPart& vision_of(loader::LoadedModel& m, const std::string& model);

void add_run_command(CLI::App& app);
void add_tool_commands(CLI::App& app);  // tokenize, logits, inspect
void add_bench_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_serve_command(CLI::App& app);  // Ollama/OpenAI HTTP server
void add_pull_command(CLI::App& app);   // a Hugging Face repo into the cache
void add_list_command(CLI::App& app);   // the models in the Hugging Face cache and Ollama's store

}  // namespace ge::cli
