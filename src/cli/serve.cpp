// `gemma serve`: the Ollama- and OpenAI-compatible HTTP server (src/server). SIGTERM or Ctrl-C stops
// taking requests, lets the running streams finish, then exits.
#include <pthread.h>

#include <csignal>
#include <iostream>
#include <thread>

#include "cli/common.h"
#include "server/server.h"

namespace ge::cli {

namespace {

struct ServeOptions {
  std::vector<std::string> models;
  std::vector<std::string> mmproj;
  server::ServerOptions server;
  int64_t context = 0;
  std::string kv_type = "f32";
  PrecisionFlags precision;
  int64_t batch = 256;
};

void serve(ServeOptions& o) {
  if (o.models.empty()) o.models.push_back(default_model_dir());
  if (o.mmproj.size() > o.models.size()) throw std::runtime_error("--mmproj: more of them than models (-m)");
  std::vector<hub::ModelLocation> models;
  for (size_t i = 0; i < o.models.size(); ++i)
    models.push_back(locate(o.models[i], i < o.mmproj.size() ? o.mmproj[i] : ""));
  o.server.engine.context = o.context;
  o.server.engine.kv_type = kv_cache_type(o.kv_type);
  o.server.precision =
      o.precision.exact ? kernels::Precision::kExact : kernels::Precision::kReducedActivations;
  o.server.max_chunk = o.batch;
  if (!o.precision.head_type.empty())
    o.server.head_type = o.precision.head_type == "q8_0" ? DType::Q8_0 : DType::Q4_0;

  // Signals go to one thread that waits for them (blocked here, before any thread starts, so that every
  // thread inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  server::Server server(o.server, models);
  std::thread waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    std::cerr << "gemma serve: stopping (finishing the running requests)\n";
    server.shutdown();
  });
  const auto stop_waiter = [&] {
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
  };
  try {
    server.run([&](int port) {
      std::cerr << "gemma serve: listening on http://" << o.server.host << ":" << port
                << " (Ollama API under /api, OpenAI API under /v1)\n";
    });
  } catch (...) {
    stop_waiter();
    throw;
  }
  stop_waiter();
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve models over the Ollama and OpenAI HTTP APIs");
  cmd->add_option(
      "-m,--model", o->models,
      "Model folder or .gguf file, ORG/NAME[@REVISION] from the Hugging Face cache or "
      "ollama:NAME[:TAG] (repeatable); clients name it by that name, or a path by its folder or file "
      "name. Default: the bundled demo model");
  cmd->add_option("--mmproj", o->mmproj,
                  "llama.cpp vision file for the GGUF model given at the same position");
  cmd->add_option("--host", o->server.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->server.port, "Port (0: any free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", o->server.engine.parallel, "Slots per model: requests answered at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("--ctx", o->context, "Context per slot (default min(8192, max_position_embeddings))");
  cmd->add_option("--queue", o->server.engine.max_queue, "Requests that may wait for a slot; more get 503")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--api-key", o->server.api_key, "Require 'Authorization: Bearer KEY' on every API call");
  cmd->add_option("-t,--threads", o->server.threads, "Compute threads per model")
      ->default_val(default_threads())
      ->check(CLI::Range(1, 1024));
  cmd->add_option("-b,--batch", o->batch, "Prompt tokens per forward step")
      ->capture_default_str()
      ->check(CLI::Range(8, 8192));
  cmd->add_option("--max-body", o->server.max_body_bytes, "Largest request body in bytes (413 beyond)")
      ->capture_default_str();
  add_precision_flags(cmd, o->precision);
  add_kv_type_option(cmd, o->kv_type);
  cmd->callback([o] { serve(*o); });
}

}  // namespace ge::cli
