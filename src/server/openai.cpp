// The OpenAI API (platform.openai.com/docs/api-reference): /v1/chat/completions, /v1/completions (SSE
// streams ending in "data: [DONE]", or one object), /v1/models. Errors in OpenAI's
// {"error": {"message", "type", "param", "code"}} shape.
#include <httplib.h>

#include <atomic>
#include <limits>

#include "server/api.h"

namespace ge::server {

namespace {

using nlohmann::json;
constexpr int64_t kBig = std::numeric_limits<int32_t>::max();

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  return std::string(prefix) + std::to_string(unix_now()) + "-" + std::to_string(++counter);
}

// The fields both endpoints share; the model's defaults fill what the request leaves out.
void read_parameters(const json& body, Generation& g) {
  if (auto v = bool_field(body, "stream"))
    g.stream = *v;
  else
    g.stream = false;
  if (auto v = number_field(body, "temperature", 0, 2)) g.sampling.temperature = static_cast<float>(*v);
  if (auto v = number_field(body, "top_p", 0, 1)) g.sampling.top_p = static_cast<float>(*v);
  // Beyond OpenAI's fields, the ones llama-server also takes.
  if (auto v = integer_field(body, "top_k", 0, kBig)) g.sampling.top_k = static_cast<int>(*v);
  if (auto v = number_field(body, "min_p", 0, 1)) g.sampling.min_p = static_cast<float>(*v);
  if (auto v = number_field(body, "repeat_penalty", 1e-6, 100))
    g.sampling.repeat_penalty = static_cast<float>(*v);
  if (auto v = integer_field(body, "seed", std::numeric_limits<int64_t>::min(),
                             std::numeric_limits<int64_t>::max()))
    g.sampling.seed = static_cast<uint64_t>(*v);
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (auto v = integer_field(body, name, 0, kBig)) g.options.max_new_tokens = *v;
  g.options.stop = stop_field(body, "stop");
  if (auto n = integer_field(body, "n", 1, kBig); n && *n != 1)
    throw ApiError(400, "'n' must be 1: one answer per request");
  for (const char* name : {"frequency_penalty", "presence_penalty"})
    if (auto v = number_field(body, name, -2, 2); v && *v != 0)
      throw ApiError(400, std::string("'") + name + "' is not supported; use 'repeat_penalty'");
  if (const auto it = body.find("tools"); it != body.end() && !it->is_null() && !it->empty())
    throw ApiError(400, "'tools' (function calling) is not supported by this server");
  if (const auto it = body.find("response_format");
      it != body.end() && it->is_object() && it->value("type", "text") != "text")
    throw ApiError(400, "'response_format' other than text is not supported by this server");
}

bool include_usage(const json& body) {
  const auto it = body.find("stream_options");
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_object()) throw ApiError(400, "'stream_options' must be an object");
  return bool_field(*it, "include_usage").value_or(false);
}

json usage(const runtime::GenerateStats& s) {
  const int64_t prompt = s.prompt_tokens + s.reused_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", s.generated_tokens},
          {"total_tokens", prompt + s.generated_tokens},
          {"prompt_tokens_details", {{"cached_tokens", s.reused_tokens}}}};
}

std::string sse(const json& j) {
  return "data: " + j.dump() + "\n\n";
}

// A content part list's text and images, in order: Gemma's template renders the images before the text.
void read_content(const json& content, const std::string& where, runtime::ChatMessage& msg,
                  std::vector<std::string>& images) {
  if (content.is_null()) return;
  if (content.is_string()) {
    msg.content = content.get<std::string>();
    return;
  }
  if (!content.is_array())
    throw ApiError(400, "'" + where + "content' must be a string or an array of parts");
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string at = where + "content[" + std::to_string(i) + "]";
    if (!part.is_object()) throw ApiError(400, "'" + at + "' must be an object");
    const std::string type = string_field(part, "type").value_or("");
    if (type == "text") {
      msg.content += string_field(part, "text").value_or("");
    } else if (type == "image_url") {
      const auto it = part.find("image_url");
      const std::string url = it == part.end()  ? ""
                              : it->is_string() ? it->get<std::string>()
                              : it->is_object() ? string_field(*it, "url").value_or("")
                                                : "";
      const size_t comma = url.find(',');
      if (!url.starts_with("data:") || comma == std::string::npos ||
          url.substr(0, comma).find(";base64") == std::string::npos)
        throw ApiError(400, "'" + at +
                                ".image_url.url' must be a data URL (data:image/...;base64,...): this server "
                                "fetches nothing");
      images.push_back(decode_base64(std::string_view(url).substr(comma + 1), "'" + at + ".image_url.url'"));
      ++msg.images;
    } else {
      throw ApiError(400, "'" + at + ".type' must be 'text' or 'image_url'");
    }
  }
}

using Parts = runtime::ThoughtSplitter::Parts;

// The thinking switch: OpenAI's reasoning_effort ("none" turns it off, any level on), or llama-server's
// chat_template_kwargs.enable_thinking.
bool read_think(const json& body) {
  if (const auto effort = string_field(body, "reasoning_effort")) return *effort != "none";
  const auto it = body.find("chat_template_kwargs");
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_object()) throw ApiError(400, "'chat_template_kwargs' must be an object");
  return bool_field(*it, "enable_thinking").value_or(false);
}

// Serves a generation as OpenAI does. `choice(parts, finish, first)` is the endpoint's choice object, from the
// answer and a Gemma 4 thought.
void respond(httplib::Response& res, std::atomic<int>& open_streams, const Generation& g, bool with_usage,
             const char* object, const char* chunk_object,
             const std::function<json(const Parts&, const json& finish, bool first)>& choice) {
  auto job = submit(g);
  const std::string id = new_id(object == std::string("chat.completion") ? "chatcmpl-" : "cmpl-");
  const int64_t created = unix_now();
  const std::string model = g.model->name;
  const auto envelope = [=](const char* kind) {
    return json{{"id", id},
                {"object", kind},
                {"created", created},
                {"model", model},
                {"system_fingerprint", "gemma-engine"}};
  };
  auto splitter = std::make_shared<AnswerSplitter>(g);
  if (!g.stream) {
    const auto all = collect(*job);
    json j = envelope(object);
    j["choices"] = json::array({choice(splitter->push(all.text, true), finish_reason(all.stats.stop), true)});
    j["usage"] = usage(all.stats);
    res.set_content(j.dump(), "application/json");
    return;
  }
  auto first = std::make_shared<bool>(true);
  stream(res, job, "text/event-stream", open_streams, [=](const runtime::Job::Progress& p) {
    std::string out;
    const Parts parts = splitter->push(p.text, p.done);
    if (!parts.answer.empty() || !parts.thinking.empty() || (*first && !p.done)) {
      json j = envelope(chunk_object);
      j["choices"] = json::array({choice(parts, nullptr, *first)});
      *first = false;
      out += sse(j);
    }
    if (!p.done) return out;
    if (!p.error.empty())
      return out + "data: " + error_json(Api::kOpenAI, 500, p.error) + "\n\n" + "data: [DONE]\n\n";
    json last = envelope(chunk_object);
    last["choices"] = json::array({choice({}, finish_reason(p.stats.stop), false)});
    out += sse(last);
    if (with_usage) {
      json u = envelope(chunk_object);
      u["choices"] = json::array();
      u["usage"] = usage(p.stats);
      out += sse(u);
    }
    return out + "data: [DONE]\n\n";
  });
}

}  // namespace

void add_openai_routes(httplib::Server& http, const RouteContext& context) {
  const ModelLookup& find = context.find;
  const std::vector<ServedModel*>& models = context.models;
  std::atomic<int>* open_streams = context.open_streams;
  http.Post(
      "/v1/chat/completions",
      handler(Api::kOpenAI, [find, open_streams](const httplib::Request& req, httplib::Response& res) {
        const json body = parse_body(req.body);
        Generation g = start_generation(body, find);
        read_parameters(body, g);
        g.think = read_think(body);
        const auto it = body.find("messages");
        if (it == body.end() || !it->is_array() || it->empty())
          throw ApiError(400, "'messages' must be a non-empty array");
        for (size_t i = 0; i < it->size(); ++i) {
          const json& m = (*it)[i];
          const std::string where = "messages[" + std::to_string(i) + "].";
          if (!m.is_object()) throw ApiError(400, "'messages[" + std::to_string(i) + "]' must be an object");
          auto role = string_field(m, "role");
          if (!role) throw ApiError(400, "'" + where + "role' is required");
          if (*role == "developer") role = "system";
          if (*role != "system" && *role != "user" && *role != "assistant")
            throw ApiError(
                400, "'" + where + "role' must be system, developer, user or assistant, not '" + *role + "'");
          runtime::ChatMessage msg{*role, "", 0};
          read_content(m.contains("content") ? m["content"] : json(), where, msg, g.images);
          g.messages.push_back(std::move(msg));
        }
        respond(res, *open_streams, g, include_usage(body), "chat.completion", "chat.completion.chunk",
                [stream = g.stream](const Parts& parts, const json& finish, bool first) {
                  json delta = json::object();
                  if (first) delta["role"] = "assistant";
                  if (!parts.answer.empty() || first) delta["content"] = parts.answer;
                  if (!parts.thinking.empty()) delta["reasoning_content"] = parts.thinking;
                  json c = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
                  if (stream) {
                    c["delta"] = delta;
                  } else {
                    c["message"] = {{"role", "assistant"}, {"content", parts.answer}};
                    if (!parts.thinking.empty()) c["message"]["reasoning_content"] = parts.thinking;
                  }
                  return c;
                });
      }));

  http.Post("/v1/completions",
            handler(Api::kOpenAI, [find, open_streams](const httplib::Request& req, httplib::Response& res) {
              const json body = parse_body(req.body);
              Generation g = start_generation(body, find);
              g.chat = false;
              g.options.max_new_tokens = 16;  // OpenAI's default for this endpoint
              read_parameters(body, g);
              const auto it = body.find("prompt");
              if (it != body.end() && it->is_array() && it->size() == 1 && (*it)[0].is_string())
                g.prompt = (*it)[0].get<std::string>();
              else if (it != body.end() && it->is_string())
                g.prompt = it->get<std::string>();
              else
                throw ApiError(400, "'prompt' must be a string (or an array of one string)");
              if (g.prompt.empty()) throw ApiError(400, "'prompt' is empty");
              if (string_field(body, "suffix").value_or("") != "")
                throw ApiError(400, "'suffix' is not supported by Gemma");
              const bool echo = bool_field(body, "echo").value_or(false);
              const std::string prompt = g.prompt;
              auto echoed = std::make_shared<bool>(!echo);
              respond(
                  res, *open_streams, g, include_usage(body), "text_completion", "text_completion",
                  [prompt, echoed](const Parts& parts, const json& finish, bool) {
                    std::string t = parts.answer;
                    if (!*echoed) {
                      t = prompt + t;
                      *echoed = true;
                    }
                    return json{{"index", 0}, {"text", t}, {"logprobs", nullptr}, {"finish_reason", finish}};
                  });
            }));

  http.Get("/v1/models", handler(Api::kOpenAI, [models](const httplib::Request&, httplib::Response& res) {
             json data = json::array();
             for (const ServedModel* m : models)
               if (m->ready)
                 data.push_back({{"id", m->name},
                                 {"object", "model"},
                                 {"created", unix_now()},
                                 {"owned_by", "gemma-engine"}});
             res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
           }));
}

}  // namespace ge::server
