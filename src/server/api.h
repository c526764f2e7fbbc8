// What the Ollama and OpenAI routes share: a generation request in one shape whichever API it came
// through, its checks, and streaming a Job's text as an HTTP response.
#pragma once
#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/thinking.h"
#include "server/server.h"

namespace ge::server {

// A request that gets a 4xx or 5xx; each API renders it in its own error shape.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

enum class Api { kOllama, kOpenAI };
// Ollama's {"error": "..."} or OpenAI's {"error": {"message", "type", "param", "code"}}.
std::string error_json(Api api, int status, const std::string& message);

// Runs a route and renders what it throws in the API's error shape: an ApiError's status, else 500.
template <class F>
httplib::Server::Handler handler(Api api, F f) {
  return [api, f](const httplib::Request& req, httplib::Response& res) {
    try {
      f(req, res);
    } catch (const ApiError& e) {
      res.status = e.status;
      res.set_content(error_json(api, e.status, e.what()), "application/json");
    } catch (const std::exception& e) {
      res.status = 500;
      res.set_content(error_json(api, 500, e.what()), "application/json");
    }
  };
}

using ModelLookup = std::function<ServedModel&(const std::string& name)>;

// What the routes of both APIs need of the server.
struct RouteContext {
  ModelLookup find;
  std::vector<ServedModel*> models;
  std::atomic<int>* open_streams = nullptr;  // streamed responses not yet fully written
};

// A generation request, whichever API it came through.
struct Generation {
  ServedModel* model = nullptr;
  bool chat = true;  // messages through the chat template; else `prompt` as it is
  std::vector<runtime::ChatMessage> messages;
  std::string prompt;
  std::vector<std::string> images;   // encoded image files, in prompt order
  runtime::SamplingParams sampling;  // the model's defaults, then the request's options
  runtime::GenerateOptions options;
  int64_t context = 0;  // the request's own limit on prompt + answer (num_ctx); 0: the slot's
  bool stream = true;
  bool think = false;  // the model's thinking mode (Gemma 4); 400 for a model without one
};

// A job's text as it streams: a Gemma 4 chat answer split into its thought and the answer proper (Ollama's
// "thinking", OpenAI's "reasoning_content"), any other text all answer.
class AnswerSplitter {
 public:
  explicit AnswerSplitter(const Generation& g);
  // The parts `text` completes; with `done`, also what was held back.
  runtime::ThoughtSplitter::Parts push(const std::string& text, bool done);

 private:
  bool split_;
  runtime::ThoughtSplitter splitter_;
};

// The request's JSON body; 400 for malformed JSON or a body that is not an object.
nlohmann::json parse_body(const std::string& body);
// Typed fields: 400 naming the field when present with the wrong type or out of range.
std::optional<std::string> string_field(const nlohmann::json& j, const char* name);
std::optional<double> number_field(const nlohmann::json& j, const char* name, double min, double max);
std::optional<int64_t> integer_field(const nlohmann::json& j, const char* name, int64_t min, int64_t max);
std::optional<bool> bool_field(const nlohmann::json& j, const char* name);
// `stop`: a string or an array of strings.
std::vector<std::string> stop_field(const nlohmann::json& j, const char* name);

// A generation for the body's "model" (400 without one, 404 for an unknown one), with its sampling
// defaults and EOS ids.
Generation start_generation(const nlohmann::json& body, const ModelLookup& find);
// The bytes of standard base64 (padding optional); 400 naming `field` for anything else.
std::string decode_base64(std::string_view text, const std::string& field);

// Tokenizes, preprocesses the images, checks everything the engine would refuse (400) and queues the
// job (503 when the queue is full or the server is stopping).
std::shared_ptr<runtime::Job> submit(const Generation& g);

// Every piece of text the job produces, until it ends; an engine error becomes a 500.
runtime::Job::Progress collect(runtime::Job& job);

// Streams the job: `render` turns each piece of progress into bytes to send (possibly none). A client
// that goes away cancels the job, which frees its slot at the engine's next step.
// The server stops only once `open_streams` is back to 0 (httplib cuts streams that are still open).
void stream(httplib::Response& res, std::shared_ptr<runtime::Job> job, const char* content_type,
            std::atomic<int>& open_streams, std::function<std::string(const runtime::Job::Progress&)> render);

// "stop" (EOS, a stop string) or "length" (max tokens, context): both APIs' done/finish reason.
const char* finish_reason(runtime::StopReason stop);
// RFC 3339 UTC with nanoseconds, as Ollama writes created_at.
std::string rfc3339_now();
int64_t unix_now();

void add_ollama_routes(httplib::Server& http, const RouteContext& context);
void add_openai_routes(httplib::Server& http, const RouteContext& context);

}  // namespace ge::server
