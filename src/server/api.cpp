#include "server/api.h"

#include <httplib.h>

#include <array>
#include <cmath>
#include <ctime>

#include "formats/image.h"
#include "runtime/prompt_images.h"

namespace ge::server {

using nlohmann::json;

std::string error_json(Api api, int status, const std::string& message) {
  if (api == Api::kOllama) return json{{"error", message}}.dump();
  const char* type = status == 401   ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status >= 500 ? "server_error"
                                     : "invalid_request_error";
  return json{{"error",
               {{"message", message},
                {"type", type},
                {"param", nullptr},
                {"code", status == 404 ? json("model_not_found") : json(nullptr)}}}}
      .dump();
}

json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) throw ApiError(400, "the request body is not valid JSON");
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

namespace {

const json* field(const json& j, const char* name) {
  const auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace

std::optional<std::string> string_field(const json& j, const char* name) {
  const json* f = field(j, name);
  if (!f) return std::nullopt;
  if (!f->is_string()) throw ApiError(400, std::string("'") + name + "' must be a string");
  return f->get<std::string>();
}

std::optional<double> number_field(const json& j, const char* name, double min, double max) {
  const json* f = field(j, name);
  if (!f) return std::nullopt;
  if (!f->is_number()) throw ApiError(400, std::string("'") + name + "' must be a number");
  const double v = f->get<double>();
  if (!std::isfinite(v) || v < min || v > max)
    throw ApiError(400, std::string("'") + name + "' must be between " + json(min).dump() + " and " +
                            json(max).dump() + ", not " + f->dump());
  return v;
}

std::optional<int64_t> integer_field(const json& j, const char* name, int64_t min, int64_t max) {
  const json* f = field(j, name);
  if (!f) return std::nullopt;
  if (!f->is_number_integer() &&
      !(f->is_number_float() && std::nearbyint(f->get<double>()) == f->get<double>()))
    throw ApiError(400, std::string("'") + name + "' must be an integer");
  const double v = f->get<double>();
  if (v < static_cast<double>(min) || v > static_cast<double>(max))
    throw ApiError(400, std::string("'") + name + "' must be between " + std::to_string(min) + " and " +
                            std::to_string(max) + ", not " + f->dump());
  return f->is_number_unsigned() ? static_cast<int64_t>(f->get<uint64_t>()) : f->get<int64_t>();
}

std::optional<bool> bool_field(const json& j, const char* name) {
  const json* f = field(j, name);
  if (!f) return std::nullopt;
  if (!f->is_boolean()) throw ApiError(400, std::string("'") + name + "' must be true or false");
  return f->get<bool>();
}

std::vector<std::string> stop_field(const json& j, const char* name) {
  const json* f = field(j, name);
  if (!f) return {};
  if (f->is_string()) return {f->get<std::string>()};
  std::vector<std::string> out;
  if (f->is_array())
    for (const json& s : *f) {
      if (!s.is_string()) break;
      out.push_back(s.get<std::string>());
    }
  if (!f->is_array() || out.size() != f->size())
    throw ApiError(400, std::string("'") + name + "' must be a string or an array of strings");
  return out;
}

Generation start_generation(const json& body, const ModelLookup& find) {
  const auto name = string_field(body, "model");
  if (!name) throw ApiError(400, "'model' is required");
  Generation g;
  g.model = &find(*name);
  g.sampling = g.model->loaded->defaults.sampling;
  g.sampling.seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  g.options.eos_ids = g.model->loaded->defaults.eos_ids;
  return g;
}

// Written by hand: none of the project's libraries decodes base64, and this is the whole of it.
std::string decode_base64(std::string_view text, const std::string& field) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t bits = 0;
  int n = 0;
  for (const char c : text) {
    const int v = table[static_cast<unsigned char>(c)];
    if (v < 0) throw ApiError(400, field + " is not valid base64");
    bits = bits << 6 | static_cast<uint32_t>(v);
    if (++n == 4) {
      out.push_back(static_cast<char>(bits >> 16));
      out.push_back(static_cast<char>(bits >> 8 & 0xFF));
      out.push_back(static_cast<char>(bits & 0xFF));
      bits = 0;
      n = 0;
    }
  }
  if (n == 1) throw ApiError(400, field + " is not valid base64 (truncated)");
  if (n == 2) out.push_back(static_cast<char>(bits >> 4));
  if (n == 3) {
    out.push_back(static_cast<char>(bits >> 10));
    out.push_back(static_cast<char>(bits >> 2 & 0xFF));
  }
  return out;
}

namespace {

std::vector<runtime::PreparedImage> prepare_images(const Generation& g) {
  std::vector<runtime::PreparedImage> out;
  if (g.images.empty()) return out;
  loader::VisionPart* vision = g.model->loaded->vision.get();
  if (!vision) throw ApiError(400, "model '" + g.model->name + "' reads text only: it cannot take images");
  for (size_t i = 0; i < g.images.size(); ++i) {
    const std::string name = "image " + std::to_string(i + 1);
    try {
      const auto& bytes = g.images[i];
      const auto image = formats::decode_image(
          std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), name);
      out.push_back(runtime::prepare_image(image, name, vision->processor, vision->processor.do_pan_and_scan,
                                           vision->config.mm_tokens_per_image));
    } catch (const ApiError&) {
      throw;
    } catch (const std::exception& e) {
      throw ApiError(400, e.what());
    }
  }
  return out;
}

}  // namespace

AnswerSplitter::AnswerSplitter(const Generation& g)
    : split_(g.chat && g.model->loaded->chat_format == runtime::ChatFormat::kGemma4) {}

runtime::ThoughtSplitter::Parts AnswerSplitter::push(const std::string& text, bool done) {
  if (!split_) return {"", text};
  auto parts = splitter_.push(text);
  if (done) {
    auto rest = splitter_.flush();
    parts.thinking += rest.thinking;
    parts.answer += rest.answer;
  }
  return parts;
}

std::shared_ptr<runtime::Job> submit(const Generation& g) {
  ServedModel& m = *g.model;
  if (g.think && m.loaded->chat_format != runtime::ChatFormat::kGemma4)
    throw ApiError(400, "model '" + m.name + "' does not support thinking");
  auto images = prepare_images(g);
  std::string text;
  try {
    text = g.chat ? runtime::render_chat(g.messages, true, g.model->loaded->chat_format, g.think) : g.prompt;
    if (!g.chat)
      for (size_t i = 0; i < images.size(); ++i) text = "<start_of_image>" + text;
    if (!images.empty()) text = runtime::expand_image_markers(text, runtime::prompt_texts(images));
  } catch (const std::exception& e) {
    throw ApiError(400, e.what());
  }
  auto tokens = m.loaded->tokenizer.encode(text, !g.chat && m.loaded->tokenizer.add_bos_default());
  if (tokens.empty()) throw ApiError(400, "the prompt is empty");
  runtime::GenerateOptions options = g.options;
  // Chat answers end with the end of the turn even where generation_config.json lists only <eos>.
  if (const auto eot = m.loaded->tokenizer.find(runtime::end_of_turn(m.loaded->chat_format)); eot && g.chat)
    options.eos_ids.push_back(*eot);
  const int64_t context =
      g.context > 0 ? std::min(g.context, m.engine->options().context) : m.engine->options().context;
  if (static_cast<int64_t>(tokens.size()) > context)
    throw ApiError(400, "the prompt has " + std::to_string(tokens.size()) +
                            " tokens, more than the context of " + std::to_string(context));
  // num_ctx below the slot's: the answer stops where that context would be full.
  if (context < m.engine->options().context) {
    const int64_t room = context - static_cast<int64_t>(tokens.size());
    options.max_new_tokens = options.max_new_tokens < 0 ? room : std::min(options.max_new_tokens, room);
  }
  auto job =
      std::make_shared<runtime::Job>(std::move(tokens), std::move(images), g.sampling, std::move(options));
  try {
    m.engine->check(*job);
  } catch (const std::exception& e) {
    throw ApiError(400, e.what());
  }
  if (!m.engine->submit(job))
    throw ApiError(503,
                   "the server is busy (every slot is taken and the queue is full) or stopping; retry later");
  return job;
}

runtime::Job::Progress collect(runtime::Job& job) {
  runtime::Job::Progress all;
  for (;;) {
    auto p = job.wait(std::chrono::milliseconds(1000));
    all.text += p.text;
    if (!p.done) continue;
    if (!p.error.empty()) throw ApiError(500, p.error);
    all.done = true;
    all.stats = p.stats;
    return all;
  }
}

void stream(httplib::Response& res, std::shared_ptr<runtime::Job> job, const char* content_type,
            std::atomic<int>& open_streams,
            std::function<std::string(const runtime::Job::Progress&)> render) {
  ++open_streams;
  res.set_chunked_content_provider(
      content_type,
      [job, render = std::move(render)](size_t, httplib::DataSink& sink) {
        const auto p = job->wait(std::chrono::milliseconds(100));
        if (!sink.is_writable()) {
          job->cancel();
          return false;
        }
        const std::string bytes = render(p);
        if (!bytes.empty() && !sink.write(bytes.data(), bytes.size())) {
          job->cancel();
          return false;
        }
        if (p.done) sink.done();
        return true;
      },
      [job, &open_streams](bool success) {
        if (!success) job->cancel();
        --open_streams;
      });
}

const char* finish_reason(runtime::StopReason stop) {
  return stop == runtime::StopReason::kMaxTokens || stop == runtime::StopReason::kContextFull ? "length"
                                                                                              : "stop";
}

std::string rfc3339_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() % 1000000000;
  char out[48];
  std::snprintf(out, sizeof out, "%s.%09lldZ", buf, static_cast<long long>(ns));
  return out;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace ge::server
