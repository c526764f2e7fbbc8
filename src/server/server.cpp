#include "server/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cstdio>
#include <set>
#include <thread>

#include "server/api.h"

namespace ge::server {

namespace {

using nlohmann::json;

// The name clients use: the folder or the file without .gguf.
std::string model_name(const std::filesystem::path& path) {
  std::filesystem::path p = path;
  if (!p.has_filename()) p = p.parent_path();  // "dir/"
  return loader::is_gguf(p) ? p.stem().string() : p.filename().string();
}

uint64_t bytes_on_disk(const std::filesystem::path& path) {
  if (std::filesystem::is_regular_file(path)) return std::filesystem::file_size(path);
  uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(path))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

std::string modified_at(const std::filesystem::path& path) {
  const auto t = std::chrono::file_clock::to_sys(std::filesystem::last_write_time(path));
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string parameter_size(int64_t n) {
  char buf[32];
  if (n >= 1'000'000'000)
    std::snprintf(buf, sizeof buf, "%.1fB", static_cast<double>(n) / 1e9);
  else if (n >= 1'000'000)
    std::snprintf(buf, sizeof buf, "%.0fM", static_cast<double>(n) / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.0fK", static_cast<double>(n) / 1e3);
  return buf;
}

// Routes whose requests /metrics counts by path; anything else counts as "other".
const std::set<std::string> kRoutes = {"/",
                                       "/health",
                                       "/metrics",
                                       "/api/generate",
                                       "/api/chat",
                                       "/api/tags",
                                       "/api/show",
                                       "/api/ps",
                                       "/api/version",
                                       "/v1/models",
                                       "/v1/chat/completions",
                                       "/v1/completions"};

// The API whose error shape a path's errors take.
Api api_of(const std::string& path) {
  return path.starts_with("/v1/") ? Api::kOpenAI : Api::kOllama;
}

}  // namespace

Server::Server(ServerOptions options, std::vector<hub::ModelLocation> models) : options_(std::move(options)) {
  if (models.empty()) throw std::invalid_argument("serve: give at least one model with -m");
  std::set<std::string> names;
  for (auto& [path, mmproj, name] : models) {
    if (!std::filesystem::exists(path)) throw std::runtime_error(path.string() + ": no such file or folder");
    auto m = std::make_unique<ServedModel>();
    m->name = name.empty() ? model_name(path) : name;
    if (!names.insert(m->name).second)
      throw std::invalid_argument("two models are named '" + m->name + "': rename a folder or file");
    m->path = path;
    m->mmproj = mmproj;
    m->format = loader::is_gguf(path) ? "gguf" : "safetensors";
    m->size_bytes = bytes_on_disk(path) + (mmproj.empty() ? 0 : bytes_on_disk(mmproj));
    m->modified_at = modified_at(path);
    models_.push_back(std::move(m));
  }
}

Server::~Server() = default;

ServedModel& Server::find_model(const std::string& requested) const {
  // Ollama's clients add ":latest" to a name without a tag, and an Ollama model's name has one.
  const auto untagged = [](std::string name) {
    if (name.ends_with(":latest")) name.resize(name.size() - 7);
    return name;
  };
  const std::string name = untagged(requested);
  for (const auto& m : models_)
    if (untagged(m->name) == name) {
      if (!m->ready) throw ApiError(503, "model '" + name + "' is still loading; retry shortly");
      return *m;
    }
  std::string known;
  for (const auto& m : models_) known += (known.empty() ? "" : ", ") + m->name;
  throw ApiError(404, "model '" + requested + "' not found; this server has: " + known);
}

void Server::load_models() {
  for (auto& m : models_) {
    if (draining_) return;
    const auto start = std::chrono::steady_clock::now();
    m->loaded.emplace(loader::load_model(m->path, options_.max_chunk, m->mmproj));
    models::CausalLM& model = *m->loaded->model;
    model.set_prefill_precision(options_.precision);
    model.set_decode_precision(options_.precision);
    if (options_.head_type) model.quantize_lm_head(*options_.head_type);
    m->pool = std::make_unique<kernels::ThreadPool>(options_.threads);
    siglip::Gemma3VisionEncoder* encoder = m->loaded->vision ? &m->loaded->vision->bind() : nullptr;
    runtime::EngineOptions engine = options_.engine;
    engine.context =
        std::min(engine.context > 0 ? engine.context : 8192, model.shape().max_position_embeddings);
    m->engine = std::make_unique<runtime::Engine>(model, m->loaded->tokenizer, *m->pool, encoder, engine);
    m->family = model.family_name();
    m->quantization = model.matrix_formats();
    m->parameter_size = parameter_size(model.parameter_count());
    m->load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m->ready = true;
    std::fprintf(stderr, "gemma serve: %s ready (%.1fs; %d slot(s) of %lld positions)\n", m->name.c_str(),
                 m->load_seconds, engine.parallel, static_cast<long long>(engine.context));
  }
}

void Server::count(const httplib::Request& req, const httplib::Response& res) {
  std::lock_guard lock(counts_mutex_);
  ++request_counts_[{kRoutes.count(req.path) ? req.path : "other", res.status}];
}

std::string Server::metrics() const {
  std::string out;
  const auto line = [&](const std::string& s) { out += s + "\n"; };
  line("# HELP gemma_requests_total HTTP requests answered, by path and status.");
  line("# TYPE gemma_requests_total counter");
  {
    std::lock_guard lock(counts_mutex_);
    for (const auto& [key, n] : request_counts_)
      line("gemma_requests_total{path=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n));
  }
  struct Metric {
    const char* name;
    const char* type;
    const char* help;
    std::function<double(const runtime::EngineStats&)> value;
  };
  const Metric metrics[] = {
      {"gemma_jobs_total", "counter", "Generation requests taken into a slot.",
       [](const auto& s) { return static_cast<double>(s.jobs); }},
      {"gemma_prompt_tokens_total", "counter", "Prompt tokens run (reused ones excluded).",
       [](const auto& s) { return static_cast<double>(s.prompt_tokens); }},
      {"gemma_prompt_tokens_reused_total", "counter", "Prompt tokens found in a slot's cache.",
       [](const auto& s) { return static_cast<double>(s.reused_tokens); }},
      {"gemma_generated_tokens_total", "counter", "Tokens generated.",
       [](const auto& s) { return static_cast<double>(s.generated_tokens); }},
      {"gemma_prefill_seconds_total", "counter", "Seconds spent running prompts.",
       [](const auto& s) { return s.prefill_seconds; }},
      {"gemma_decode_seconds_total", "counter", "Seconds spent in batched decode steps.",
       [](const auto& s) { return s.decode_seconds; }},
      {"gemma_decode_steps_total", "counter", "Batched decode steps.",
       [](const auto& s) { return static_cast<double>(s.decode_steps); }},
      {"gemma_decode_rows_total", "counter",
       "Sequences advanced by decode steps (rows / steps = mean batch).",
       [](const auto& s) { return static_cast<double>(s.decode_rows); }},
      {"gemma_queue_length", "gauge", "Requests waiting for a slot.",
       [](const auto& s) { return static_cast<double>(s.queued); }},
      {"gemma_slots_busy", "gauge", "Slots serving a request.",
       [](const auto& s) { return static_cast<double>(s.active); }},
      {"gemma_slots", "gauge", "Slots (--parallel).",
       [](const auto& s) { return static_cast<double>(s.slots); }},
  };
  for (const Metric& metric : metrics) {
    line(std::string("# HELP ") + metric.name + " " + metric.help);
    line(std::string("# TYPE ") + metric.name + " " + metric.type);
    for (const auto& m : models_) {
      if (!m->ready) continue;
      char value[64];
      std::snprintf(value, sizeof value, "%.17g", metric.value(m->engine->stats()));
      line(std::string(metric.name) + "{model=\"" + m->name + "\"} " + value);
    }
  }
  return out;
}

void Server::routes() {
  httplib::Server& http = *http_;
  // One HTTP thread per open stream: enough for every slot and every queued request, and more.
  const size_t threads = static_cast<size_t>(options_.engine.parallel) + options_.engine.max_queue + 16;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(options_.max_body_bytes);
  // Debian's cpp-httplib listens with a backlog of 5: a burst of clients connecting at once overflows it
  // and some wait seconds for the kernel to retry. The socket is kept here and listen() raises it.
  http.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_socket_ = sock;
  });
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path == "/" || req.path == "/health")
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + options_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_content(error_json(api_of(req.path), 401, "missing or wrong API key (Authorization: Bearer KEY)"),
                    "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 413   ? "the request body is larger than the server takes"
                                : res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                                    : "HTTP error " + std::to_string(res.status);
    res.set_content(error_json(api_of(req.path), res.status, message), "application/json");
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) { count(req, res); });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("Ollama is running", "text/plain");  // what Ollama answers; clients probe for it
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool ready =
        std::all_of(models_.begin(), models_.end(), [](const auto& m) { return m->ready.load(); });
    const char* status = draining_ ? "stopping" : ready ? "ready" : "loading";
    res.status = ready && !draining_ ? 200 : 503;
    res.set_content(json{{"status", status}}.dump(), "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
  const ModelLookup find = [this](const std::string& name) -> ServedModel& {
    if (draining_) throw ApiError(503, "the server is stopping");
    return find_model(name);
  };
  RouteContext context{find, {}, &open_streams_};
  for (const auto& m : models_) context.models.push_back(m.get());
  add_ollama_routes(http, context);
  add_openai_routes(http, context);
}

void Server::run(const std::function<void(int port)>& on_listening) {
  http_ = std::make_unique<httplib::Server>();
  routes();
  const int port = options_.port == 0
                       ? http_->bind_to_any_port(options_.host)
                       : (http_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port < 0)
    throw std::runtime_error("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                             " (in use, or not an address of this machine)");
  ::listen(listen_socket_, SOMAXCONN);
  std::thread listener([this] { http_->listen_after_bind(); });
  if (on_listening) on_listening(port);
  try {
    load_models();
  } catch (...) {
    http_->stop();
    listener.join();
    throw;
  }
  listener.join();
}

void Server::shutdown() {
  draining_ = true;
  for (const auto& m : models_)
    if (m->ready) m->engine->drain();
  // The engines are done; let the HTTP threads write what their streams still hold (httplib cuts
  // streams that are open when it stops), for at most a few seconds.
  for (int i = 0; i < 500 && open_streams_ > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (http_) http_->stop();
}

}  // namespace ge::server
