// An HTTP request from a stranger to `gemma serve`'s Ollama and OpenAI routes, served by the real routes and
// engine over the bundled tiny model (a context of 64 positions bounds each answer). The input's first byte
// picks the route; the rest is the request body, framed as a client would (cpp-httplib parses the framing).
#include <httplib.h>
#include <sys/socket.h>

#include <cstdio>
#include <string>

#include "server/api.h"

namespace {

using namespace ge;

// cpp-httplib's request processing without a socket: the request is read from, and the answer written to, a
// memory stream.
class SocketlessServer : public httplib::Server {
 public:
  // cpp-httplib ends a streamed answer early while the server has no listening socket ("shutting down"): a
  // socket of its own, never listened on, lets streams run to their end as they do in `gemma serve`.
  SocketlessServer() { svr_sock_ = ::socket(AF_UNIX, SOCK_STREAM, 0); }

  std::string answer(const std::string& request) {
    httplib::detail::BufferStream stream;
    stream.write(request.data(), request.size());
    bool closed = false;
    process_request(stream, /*close_connection=*/true, closed, [](httplib::Request&) {});
    return stream.get_buffer().substr(request.size());  // one buffer holds the request, then the answer
  }
};

struct Served {
  server::ServedModel model;
  SocketlessServer http;
  std::atomic<int> open_streams{0};

  Served() {
    model.name = "gemma3-tiny";
    model.path = std::filesystem::path(GE_MODELS_DIR) / "gemma3-tiny";
    model.loaded.emplace(loader::load_model(model.path, 64));
    model.pool = std::make_unique<kernels::ThreadPool>(1);
    runtime::EngineOptions options;
    options.context = 64;
    options.max_queue = 4;
    model.engine = std::make_unique<runtime::Engine>(*model.loaded->model, model.loaded->tokenizer, *model.pool,
                                                     nullptr, options);
    model.ready = true;
    const server::ModelLookup find = [this](const std::string& name) -> server::ServedModel& {
      if (name != model.name) throw server::ApiError(404, "model '" + name + "' not found");
      return model;
    };
    const server::RouteContext context{find, {&model}, &open_streams};
    server::add_ollama_routes(http, context);
    server::add_openai_routes(http, context);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Served served;
  static const char* const kRoutes[] = {"/api/generate", "/api/chat", "/api/show", "/v1/chat/completions",
                                        "/v1/completions"};
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string request = std::string("POST ") + kRoutes[data[0] % 5] +
                              " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  const std::string answer = served.http.answer(request);
  // Every request gets an HTTP answer: a 5xx would mean a request the routes did not check.
  if (!answer.starts_with("HTTP/1.1 ") || answer.starts_with("HTTP/1.1 5")) {
    std::fprintf(stderr, "%s\n---\n%s\n", request.c_str(), answer.c_str());
    __builtin_trap();
  }
  return 0;
}
