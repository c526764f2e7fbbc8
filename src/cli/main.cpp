// gemma: run, inspect and benchmark Gemma models on the CPU.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "cli/common.h"

namespace ge::cli {

std::string default_model_dir() {
  if (const char* env = std::getenv("GEMMA_MODEL")) return env;
  return GE_DEFAULT_MODEL_DIR;
}

int default_threads() {
  return std::max(1u, std::thread::hardware_concurrency());
}

void add_model_option(CLI::App* cmd, std::string& model) {
  cmd->add_option(
      "-m,--model", model,
      "Model: a folder (Hugging Face layout) or .gguf file, ORG/NAME[@REVISION] from the Hugging Face "
      "cache (gemma pull), or ollama:NAME[:TAG] from Ollama's store; default: the bundled demo model");
}

hub::ModelLocation locate(const std::string& model, const std::string& mmproj) {
  hub::ModelLocation where = hub::locate_model(model);
  if (!mmproj.empty()) where.mmproj = mmproj;
  return where;
}

void add_precision_flags(CLI::App* cmd, PrecisionFlags& flags) {
  cmd->add_flag("--exact", flags.exact,
                "Keep every activation in f32 (what the tests compare with the float64 reference). Default: "
                "round activations as llama.cpp does where that is faster: 8-bit blocks with integer dot "
                "products for quantized weights (GGUF block types, MLX affine 4/8-bit, nvfp4, mxfp4; AVX2), "
                "bf16 for bf16 weights in prompts (AVX512_BF16 CPUs); bf16/f16/f32 decode stays f32");
  cmd->add_flag("--fast,--fast-prefill,--prefill-bf16", flags.legacy_fast, "The default now (ignored)")
      ->group("");
  cmd->add_option(
         "--head-type", flags.head_type,
         "Compute logits from a q8_0 or q4_0 copy of an f32/f16/bf16 LM head (the tied 262144-row head "
         "is most of a small model's bytes per token; see README for what it does to the logits)")
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
}

void add_kv_type_option(CLI::App* cmd, std::string& kv_type) {
  cmd->add_option("--kv-type", kv_type,
                  "KV cache type: f32 (exact) or f16 (half the memory, ~1e-2 on logits)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16"}));
}

DType kv_cache_type(const std::string& kv_type) {
  return kv_type == "f16" ? DType::F16 : DType::F32;
}

void print_progress(std::chrono::steady_clock::time_point start, size_t tensors_done, size_t tensors_total,
                    uint64_t bytes_done, uint64_t bytes_total) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double frac = bytes_total ? static_cast<double>(bytes_done) / static_cast<double>(bytes_total) : 1.0;
  const double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu tensors, %.0f/%.0f MB, ETA %.0f s ", filled,
               "##############################", kWidth - filled, "", tensors_done, tensors_total,
               static_cast<double>(bytes_done) / 1e6, static_cast<double>(bytes_total) / 1e6, eta);
  std::fflush(stderr);
}

loader::VisionPart& vision_of(loader::LoadedModel& m, const std::string& model) {
  if (!m.vision)
    throw std::runtime_error("--image: " + model + " reads text only (no vision tower" +
                             (loader::is_gguf(m.dir) ? "; give its mmproj file with --mmproj)" : ")"));
  return *m.vision;
}

void apply_precision(models::CausalLM& model, const PrecisionFlags& flags) {
  const auto precision = flags.exact ? kernels::Precision::kExact : kernels::Precision::kReducedActivations;
  // Repacking a quantized model takes seconds: say so on a terminal, and nothing when piped.
  if (!flags.exact && isatty(STDERR_FILENO)) {
    model.prepare_reduced_activations([](int64_t done, int64_t total) {
      std::fprintf(stderr, "\rpreparing the fast kernels: layer %lld of %lld", static_cast<long long>(done),
                   static_cast<long long>(total));
      std::fflush(stderr);
    });
    std::fprintf(stderr, "\r\033[K");
  }
  model.set_prefill_precision(precision);
  model.set_decode_precision(precision);
  if (!flags.head_type.empty()) model.quantize_lm_head(flags.head_type == "q8_0" ? DType::Q8_0 : DType::Q4_0);
}

}  // namespace ge::cli

int main(int argc, char** argv) {
  CLI::App app{"gemma: run Gemma models from Hugging Face checkpoints on the CPU"};
  app.require_subcommand(1);
  ge::cli::add_run_command(app);
  ge::cli::add_serve_command(app);
  ge::cli::add_tool_commands(app);
  ge::cli::add_bench_command(app);
  ge::cli::add_convert_command(app);
  ge::cli::add_quantize_command(app);
  ge::cli::add_pull_command(app);
  ge::cli::add_list_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "gemma: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
