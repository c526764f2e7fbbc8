// `gemma quantize HF_DIR -o OUT_DIR [--mode affine|nvfp4|mxfp4|mxfp8] [--bits B] [--group-size G]
// [--keep-embedding] [--embedding-bits B] [--force]`: a Hugging Face checkpoint to the quantized folder
// mlx-lm loads. A progress line and a summary on a terminal, nothing else unless something fails.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>

#include "cli/common.h"
#include "quantize/mlx_quantize.h"

namespace ge::cli {

namespace {

struct QuantizeCliOptions {
  std::string dir;
  std::string output;
  std::string mode = "affine";
  std::optional<int> bits;
  std::optional<int> group_size;
  bool keep_embedding = false;
  std::optional<int> embedding_bits;
  bool force = false;
  int threads = default_threads();
};

// The mode's mlx-lm defaults for what the user did not give.
kernels::QuantParams quant_params(const QuantizeCliOptions& o) {
  const auto mode = kernels::parse_quant_mode(o.mode);
  if (!mode) throw std::runtime_error("--mode: '" + o.mode + "' is not one of affine, nvfp4, mxfp4, mxfp8");
  kernels::QuantParams p = kernels::default_quant_params(*mode);
  if (o.bits) p.bits = *o.bits;
  if (o.group_size) p.group_size = *o.group_size;
  return p;
}

quantize::ProgressCallback progress_line(std::chrono::steady_clock::time_point start) {
  return [start](const quantize::Progress& p) {
    print_progress(start, p.tensors_done, p.tensors_total, p.bytes_done, p.bytes_total);
  };
}

void run_quantize(const QuantizeCliOptions& o) {
  quantize::QuantizeOptions opts;
  opts.params = quant_params(o);
  opts.keep_embedding = o.keep_embedding;
  opts.embedding_bits = o.embedding_bits;
  opts.force = o.force;
  opts.threads = o.threads;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  if (tty) opts.progress = progress_line(start);
  try {
    const auto r = quantize::quantize_checkpoint(locate(o.dir).path, o.output, opts);
    if (tty) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr,
                   "\n%s: %s, %zu tensors quantized, %zu copied, %zu file(s), %.0f MB -> %.0f MB, %.1f s\n",
                   o.output.c_str(), kernels::describe(opts.params).c_str(), r.quantized_tensors,
                   r.copied_tensors, r.shards, static_cast<double>(r.input_bytes) / 1e6,
                   static_cast<double>(r.output_bytes) / 1e6, elapsed);
    }
  } catch (...) {
    if (tty) std::fputc('\n', stderr);
    throw;
  }
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto o = std::make_shared<QuantizeCliOptions>();
  CLI::App* cmd =
      app.add_subcommand("quantize", "Quantize a Hugging Face checkpoint folder to MLX's format (mlx-lm)");
  cmd->add_option(
         "dir", o->dir,
         "Checkpoint folder (config.json, *.safetensors, tokenizer), or ORG/NAME[@REVISION] from the "
         "Hugging Face cache")
      ->required();
  cmd->add_option("-o,--output", o->output, "Output folder (must not exist unless --force)")->required();
  cmd->add_option("--mode", o->mode, "affine, nvfp4, mxfp4 or mxfp8")->capture_default_str();
  cmd->add_option("--bits", o->bits,
                  "Bits per weight (default: the mode's: affine 4, nvfp4/mxfp4 4, mxfp8 8)");
  cmd->add_option("--group-size", o->group_size, "Weights per scale (default: affine 64, nvfp4 16, mx* 32)");
  cmd->add_flag("--keep-embedding", o->keep_embedding,
                "Leave the embedding table (and tied LM head) unquantized");
  cmd->add_option("--embedding-bits", o->embedding_bits,
                  "Quantize the embedding table at these bits (affine only)");
  cmd->add_flag("--force", o->force, "Replace the output folder if it exists");
  cmd->add_option("-t,--threads", o->threads, "Threads")->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->callback([o] { run_quantize(*o); });
}

}  // namespace ge::cli
