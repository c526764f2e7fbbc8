// Pieces shared by the subcommands of the `gemma` binary.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace ge::cli {

// The bundled demo model (random weights) used when -m is not given.
std::string default_model_dir();
int default_threads();

void add_run_command(CLI::App& app);
void add_tool_commands(CLI::App& app);  // tokenize, logits, inspect
void add_bench_command(CLI::App& app);

}  // namespace ge::cli
