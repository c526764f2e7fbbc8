// `gemma serve`: the engine behind the Ollama API (/api/...) and the OpenAI API (/v1/...), so that tools
// written for either (Open WebUI, Continue, the ollama and openai client libraries) use it unchanged.
// Each model has its own runtime::Engine (slots, batched decode, prefix reuse); HTTP threads only parse,
// queue a Job and stream its text. Nothing a request leaves behind is needed by a later one (a slot's
// cached prefix only saves time), so replicas behind a load balancer need no shared state.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "hub/model_location.h"
#include "kernels/matmul.h"
#include "loader/model_loader.h"
#include "runtime/engine.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace ge::server {

// One model as the server offers it.
struct ServedModel {
  // What clients ask for: the repo id or Ollama name it was given by, else the folder or file name (no
  // .gguf).
  std::string name;
  std::filesystem::path path, mmproj;
  // Filled once loaded (ready): the server answers /health "loading" until every model is.
  std::optional<loader::LoadedModel> loaded;
  std::unique_ptr<kernels::ThreadPool> pool;
  std::unique_ptr<runtime::Engine> engine;
  double load_seconds = 0;
  uint64_t size_bytes = 0;
  std::string format, family, quantization, parameter_size, modified_at;
  std::atomic<bool> ready{false};
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 11434;
  std::string api_key;  // empty: no authentication
  size_t max_body_bytes = 64u << 20;
  int threads = 2;  // compute threads per model
  runtime::EngineOptions engine;
  kernels::Precision precision = kernels::Precision::kReducedActivations;
  std::optional<DType> head_type;  // a Q8_0 / Q4_0 copy of a float LM head (gemma run --head-type)
  int64_t max_chunk = 256;
};

class Server {
 public:
  Server(ServerOptions options, std::vector<hub::ModelLocation> models);
  ~Server();

  // Loads the models (in the background: /health says "loading" meanwhile), binds and serves until
  // shutdown(); throws when the address cannot be bound. `on_listening` gets the bound port.
  void run(const std::function<void(int port)>& on_listening = {});
  // Stops taking requests (503), lets the running ones finish, then stops serving. Thread-safe.
  void shutdown();

 private:
  void load_models();
  void routes();
  ServedModel& find_model(const std::string& name) const;
  void count(const httplib::Request& req, const httplib::Response& res);
  std::string metrics() const;

  ServerOptions options_;
  std::vector<std::unique_ptr<ServedModel>> models_;
  std::unique_ptr<httplib::Server> http_;
  std::atomic<bool> draining_{false};
  std::atomic<int> open_streams_{0};
  int listen_socket_ = -1;
  std::string load_error_;
  mutable std::mutex counts_mutex_;
  std::map<std::pair<std::string, int>, int64_t> request_counts_;  // (path, status) -> requests
};

}  // namespace ge::server
