// `gemma convert HF_DIR -o OUT.gguf [--outtype f32|f16|bf16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k]
// [--mmproj OUT-mmproj.gguf]`: a Hugging Face checkpoint to the GGUF files that llama.cpp and Ollama load.
// A progress line on a terminal, nothing else unless something fails.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "convert/gguf_convert.h"
#include "formats/atomic_output.h"

namespace ge::cli {

namespace {

struct ConvertOptions {
  std::string dir;
  std::string output;
  std::string outtype;
  std::string mmproj;
};

using Converter = convert::ConvertResult (*)(const std::filesystem::path&, const std::filesystem::path&,
                                             const convert::ConvertOptions&);

void convert_one(Converter convert, const std::string& dir, const std::string& output,
                 convert::ConvertOptions opts, bool tty) {
  const auto start = std::chrono::steady_clock::now();
  if (tty) {
    opts.progress = [start](const convert::Progress& p) {
      print_progress(start, p.tensors_done, p.tensors_total, p.bytes_done, p.bytes_total);
    };
  }
  try {
    const auto r = convert(dir, output, opts);
    if (tty) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "\n%s: %s, %zu tensors (%s), %.1f s\n", output.c_str(), r.architecture.c_str(),
                   r.tensor_count, std::string(convert::out_type_name(r.out_type)).c_str(), elapsed);
    }
  } catch (...) {
    if (tty) std::fputc('\n', stderr);
    throw;
  }
}

void run_convert(const ConvertOptions& o) {
  convert::ConvertOptions opts;
  if (!o.outtype.empty()) {
    opts.out_type = convert::parse_out_type(o.outtype);
    if (!opts.out_type)
      throw std::runtime_error("--outtype: '" + o.outtype + "' is not one of " + convert::out_type_names());
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  const std::string dir = locate(o.dir).path.string();
  convert_one(convert::convert_to_gguf, dir, o.output, opts, tty);
  if (o.mmproj.empty()) return;
  // Interrupted while writing the projector: the text output goes too, as on failure.
  const formats::RemovalOnSignal interrupted(o.output);
  try {
    convert_one(convert::convert_mmproj_to_gguf, dir, o.mmproj, opts, tty);
  } catch (...) {
    // One command, one outcome: a failed projector leaves no half of the pair behind.
    std::filesystem::remove(o.output);
    throw;
  }
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* cmd =
      app.add_subcommand("convert", "Convert a Hugging Face checkpoint folder to GGUF (llama.cpp, Ollama)");
  cmd->add_option(
         "dir", o->dir,
         "Checkpoint folder (config.json, *.safetensors, tokenizer), or ORG/NAME[@REVISION] from the "
         "Hugging Face cache")
      ->required();
  cmd->add_option("-o,--output", o->output, "Output .gguf file")->required();
  cmd->add_option(
      "--outtype", o->outtype,
      "f32, f16, bf16, q8_0, q4_0, or llama-quantize's mixes q4_k_m, q5_k_m, q6_k (the mmproj file "
      "of a mix is f16; default: the checkpoint's dtype)");
  cmd->add_option(
      "--mmproj", o->mmproj,
      "Also write the vision tower and projector (Gemma 3 multimodal) as a llama.cpp mmproj file");
  cmd->callback([o] { run_convert(*o); });
}

}  // namespace ge::cli
