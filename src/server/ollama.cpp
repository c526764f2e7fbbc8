// The Ollama API (github.com/ollama/ollama/blob/main/docs/api.md): /api/generate, /api/chat (NDJSON
// streams by default), /api/tags, /api/show, /api/ps, /api/version. Errors are {"error": "..."}.
#include <httplib.h>

#include <limits>

#include "server/api.h"

namespace ge::server {

namespace {

using nlohmann::json;
constexpr int64_t kBig = std::numeric_limits<int32_t>::max();

// The request's "options", over the model's defaults.
void read_options(const json& body, Generation& g) {
  const auto it = body.find("options");
  if (it == body.end() || it->is_null()) return;
  if (!it->is_object()) throw ApiError(400, "'options' must be an object");
  const json& o = *it;
  if (auto v = number_field(o, "temperature", 0, 100)) g.sampling.temperature = static_cast<float>(*v);
  if (auto v = integer_field(o, "top_k", 0, kBig)) g.sampling.top_k = static_cast<int>(*v);
  if (auto v = number_field(o, "top_p", 0, 1)) g.sampling.top_p = static_cast<float>(*v);
  if (auto v = number_field(o, "min_p", 0, 1)) g.sampling.min_p = static_cast<float>(*v);
  if (auto v = number_field(o, "repeat_penalty", 1e-6, 100))
    g.sampling.repeat_penalty = static_cast<float>(*v);
  if (auto v = integer_field(o, "repeat_last_n", -1, kBig)) g.sampling.repeat_last_n = static_cast<int>(*v);
  if (auto v =
          integer_field(o, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
      v && *v >= 0)
    g.sampling.seed = static_cast<uint64_t>(*v);
  // -1: until the answer ends; -2: until the context is full (the same here: the context ends it).
  if (auto v = integer_field(o, "num_predict", -2, kBig)) g.options.max_new_tokens = *v < 0 ? -1 : *v;
  if (auto v = integer_field(o, "num_ctx", 1, kBig)) g.context = *v;
  g.options.stop = stop_field(o, "stop");
}

// "think": true / false, or a level ("high", "medium", "low"), which Gemma 4's single switch reads as true.
bool read_think(const json& body) {
  const auto it = body.find("think");
  if (it == body.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string() && (*it == "high" || *it == "medium" || *it == "low")) return true;
  throw ApiError(400, "'think' must be true, false, \"high\", \"medium\" or \"low\"");
}

void read_common(const json& body, Generation& g) {
  if (auto stream = bool_field(body, "stream")) g.stream = *stream;
  g.think = read_think(body);
  if (body.contains("format") && !body["format"].is_null() && body["format"] != "")
    throw ApiError(400, "'format' (structured output) is not supported by this server");
  read_options(body, g);
}

std::vector<std::string> read_images(const json& holder, const std::string& where) {
  std::vector<std::string> out;
  const auto it = holder.find("images");
  if (it == holder.end() || it->is_null()) return out;
  if (!it->is_array()) throw ApiError(400, "'" + where + "images' must be an array of base64 strings");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& img = (*it)[i];
    const std::string name = "'" + where + "images[" + std::to_string(i) + "]'";
    if (!img.is_string()) throw ApiError(400, name + " must be a base64 string");
    out.push_back(decode_base64(img.get_ref<const std::string&>(), name));
  }
  return out;
}

json metrics(const runtime::GenerateStats& s, std::chrono::steady_clock::time_point received) {
  const auto ns = [](double seconds) { return static_cast<int64_t>(seconds * 1e9); };
  const int64_t total =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - received)
          .count();
  const int64_t prompt = ns(s.prompt_seconds + s.image_seconds), eval = ns(s.decode_seconds);
  return {{"done_reason", finish_reason(s.stop)},
          {"total_duration", total},
          // Everything that was neither prompt nor answer: the wait for a slot, tokenizing, images decoded.
          {"load_duration", std::max<int64_t>(0, total - prompt - eval)},
          {"prompt_eval_count", s.prompt_tokens},
          {"prompt_eval_duration", prompt},
          {"eval_count", s.generated_tokens},
          {"eval_duration", eval}};
}

using Parts = runtime::ThoughtSplitter::Parts;

// Serves a generation as Ollama does: NDJSON objects, each with the model, created_at and `piece(parts)` (the
// answer, and a Gemma 4 thought as "thinking"), the last with done and the metrics; or one object when not
// streaming.
void respond(httplib::Response& res, std::atomic<int>& open_streams, const Generation& g,
             const std::function<json(const Parts&)>& piece) {
  const auto received = std::chrono::steady_clock::now();
  auto job = submit(g);
  const std::string model = g.model->name;
  const auto object = [model, piece](const Parts& parts, bool done) {
    json j = {{"model", model}, {"created_at", rfc3339_now()}};
    j.update(piece(parts));
    j["done"] = done;
    return j;
  };
  auto splitter = std::make_shared<AnswerSplitter>(g);
  if (!g.stream) {
    const auto all = collect(*job);
    json j = object(splitter->push(all.text, true), true);
    j.update(metrics(all.stats, received));
    res.set_content(j.dump(), "application/json");
    return;
  }
  stream(res, job, "application/x-ndjson", open_streams, [object, received, splitter](const runtime::Job::Progress& p) {
    std::string out;
    if (const Parts parts = splitter->push(p.text, p.done); !parts.answer.empty() || !parts.thinking.empty())
      out += object(parts, false).dump() + "\n";
    if (p.done) {
      if (!p.error.empty()) return out + error_json(Api::kOllama, 500, p.error) + "\n";
      json last = object({}, true);
      last.update(metrics(p.stats, received));
      out += last.dump() + "\n";
    }
    return out;
  });
}

// An empty prompt (or no messages) only asks for the model to be loaded: it is, and stays so.
bool load_only(httplib::Response& res, const ServedModel& m, const char* reply_key) {
  json j = {{"model", m.name}, {"created_at", rfc3339_now()}, {"done", true}, {"done_reason", "load"}};
  if (std::string(reply_key) == "message")
    j["message"] = {{"role", "assistant"}, {"content", ""}};
  else
    j["response"] = "";
  res.set_content(j.dump(), "application/json");
  return true;
}

json details(const ServedModel& m) {
  return {{"parent_model", ""},
          {"format", m.format},
          {"family", m.family},
          {"families", json::array({m.family})},
          {"parameter_size", m.parameter_size},
          {"quantization_level", m.quantization}};
}

std::string digest(const ServedModel& m) {
  // Not a content hash (that would read every byte of the weights at start): a stable id of the file.
  const auto h = std::hash<std::string>{}(m.path.string() + m.modified_at + std::to_string(m.size_bytes));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016zx", h);
  return std::string(buf) + std::string(buf) + std::string(buf) + std::string(buf);
}

}  // namespace

void add_ollama_routes(httplib::Server& http, const RouteContext& context) {
  const ModelLookup& find = context.find;
  const std::vector<ServedModel*>& models = context.models;
  std::atomic<int>* open_streams = context.open_streams;
  http.Post(
      "/api/generate",
      handler(Api::kOllama, [find, open_streams](const httplib::Request& req, httplib::Response& res) {
        const json body = parse_body(req.body);
        Generation g = start_generation(body, find);
        ServedModel& m = *g.model;
        read_common(body, g);
        g.prompt = string_field(body, "prompt").value_or("");
        g.images = read_images(body, "");
        if (g.prompt.empty() && g.images.empty()) {
          load_only(res, m, "response");
          return;
        }
        if (string_field(body, "suffix").value_or("") != "")
          throw ApiError(400, "'suffix' (fill in the middle) is not supported by Gemma");
        g.chat = !bool_field(body, "raw").value_or(false);
        if (g.chat) {
          if (auto system = string_field(body, "system"); system && !system->empty())
            g.messages.push_back({"system", *system, 0});
          g.messages.push_back({"user", g.prompt, static_cast<int64_t>(g.images.size())});
        }
        respond(res, *open_streams, g, [](const Parts& parts) {
          json j = {{"response", parts.answer}};
          if (!parts.thinking.empty()) j["thinking"] = parts.thinking;
          return j;
        });
      }));

  http.Post("/api/chat",
            handler(Api::kOllama, [find, open_streams](const httplib::Request& req, httplib::Response& res) {
              const json body = parse_body(req.body);
              Generation g = start_generation(body, find);
              ServedModel& m = *g.model;
              read_common(body, g);
              const auto it = body.find("messages");
              if (it != body.end() && !it->is_null() && !it->is_array())
                throw ApiError(400, "'messages' must be an array");
              if (it == body.end() || it->is_null() || it->empty()) {
                load_only(res, m, "message");
                return;
              }
              for (size_t i = 0; i < it->size(); ++i) {
                const json& msg = (*it)[i];
                const std::string where = "messages[" + std::to_string(i) + "].";
                if (!msg.is_object())
                  throw ApiError(400, "'messages[" + std::to_string(i) + "]' must be an object");
                const auto role = string_field(msg, "role");
                if (!role) throw ApiError(400, "'" + where + "role' is required");
                const auto images = read_images(msg, where);
                g.images.insert(g.images.end(), images.begin(), images.end());
                g.messages.push_back(
                    {*role, string_field(msg, "content").value_or(""), static_cast<int64_t>(images.size())});
              }
              respond(res, *open_streams, g, [](const Parts& parts) {
                json message = {{"role", "assistant"}, {"content", parts.answer}};
                if (!parts.thinking.empty()) message["thinking"] = parts.thinking;
                return json{{"message", message}};
              });
            }));

  const auto tag = [](const ServedModel& m) {
    return json{{"name", m.name},       {"model", m.name},     {"modified_at", m.modified_at},
                {"size", m.size_bytes}, {"digest", digest(m)}, {"details", details(m)}};
  };
  http.Get("/api/tags", handler(Api::kOllama, [models, tag](const httplib::Request&, httplib::Response& res) {
             json list = json::array();
             for (const ServedModel* m : models)
               if (m->ready) list.push_back(tag(*m));
             res.set_content(json{{"models", list}}.dump(), "application/json");
           }));
  http.Get("/api/ps", handler(Api::kOllama, [models, tag](const httplib::Request&, httplib::Response& res) {
             json list = json::array();
             for (const ServedModel* m : models) {
               if (!m->ready) continue;
               json j = tag(*m);
               j["expires_at"] = "9999-12-31T23:59:59Z";  // loaded for as long as the server runs
               j["size_vram"] = 0;
               list.push_back(j);
             }
             res.set_content(json{{"models", list}}.dump(), "application/json");
           }));
  http.Post("/api/show",
            handler(Api::kOllama, [find, open_streams](const httplib::Request& req, httplib::Response& res) {
              const json body = parse_body(req.body);
              auto name = string_field(body, "model");
              if (!name) name = string_field(body, "name");  // the older spelling
              if (!name) throw ApiError(400, "'model' is required");
              const ServedModel& m = find(*name);
              const models::CausalLM& model = *m.loaded->model;
              const auto c = model.shape();
              json capabilities = json::array({"completion"});
              if (m.loaded->vision) capabilities.push_back("vision");
              if (m.loaded->chat_format == runtime::ChatFormat::kGemma4) capabilities.push_back("thinking");
              const auto& s = m.loaded->defaults.sampling;
              std::string parameters = "temperature " + json(s.temperature).dump() + "\ntop_k " +
                                       std::to_string(s.top_k) + "\ntop_p " + json(s.top_p).dump() +
                                       "\nstop \"" + std::string(runtime::end_of_turn(m.loaded->chat_format)) + "\"";
              res.set_content(json{{"modelfile", "FROM " + m.path.string() + "\n"},
                                   {"parameters", parameters},
                                   {"template", "Gemma's chat template (rendered by the server)"},
                                   {"details", details(m)},
                                   {"model_info",
                                    {{"general.architecture", m.family},
                                     {"general.parameter_count", model.parameter_count()},
                                     {m.family + ".context_length", c.max_position_embeddings},
                                     {m.family + ".embedding_length", c.hidden_size},
                                     {m.family + ".block_count", c.num_layers},
                                     {m.family + ".attention.head_count", c.num_heads},
                                     {m.family + ".attention.head_count_kv", c.num_kv_heads},
                                     {m.family + ".attention.sliding_window", c.sliding_window}}},
                                   {"capabilities", capabilities},
                                   {"modified_at", m.modified_at}}
                                  .dump(),
                              "application/json");
            }));
  http.Get("/api/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"version", "0.6.8"}}.dump(), "application/json");
  });
}

}  // namespace ge::server
