// `gemma serve` on a free loopback port with the demo model, driven by raw HTTP (cpp-httplib's client) and
// by the real ollama and openai npm libraries (tests/node/clients.mjs): answers equal `gemma run`'s, every
// bad request gets a 4xx with a clear body and the server keeps serving, concurrent streams equal the same
// requests run alone, a client that goes away frees its slot, SIGTERM finishes the running streams.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/chat_template.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace ge {
namespace {

using nlohmann::json;

// A `gemma serve --port 0 ARGS` child process, ready (its /health says so) when constructed.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& args = "") {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    const std::string cmd = std::string("exec ") + GE_GEMMA_BIN + " serve --port 0 " + args;
    pid_ = fork();
    if (pid_ == 0) {
      // A test that dies (a failed assertion's abort, a sanitizer report) takes its server with it: an orphan
      // would hold ctest's output pipe open, and ctest would wait for it.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    err_ = fdopen(fds[0], "r");
    char line[4096];
    const std::string marker = "listening on http://127.0.0.1:";
    while (port_ == 0 && std::fgets(line, sizeof line, err_)) {
      log_ += line;
      if (const char* at = std::strstr(line, marker.c_str())) port_ = std::atoi(at + marker.size());
    }
    if (port_ == 0) throw std::runtime_error("gemma serve did not start: " + log_);
    for (int i = 0; i < 300; ++i) {
      if (auto r = client().Get("/health"); r && r->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("gemma serve never became ready");
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
    if (err_) std::fclose(err_);
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void signal(int sig) const { kill(pid_, sig); }
  // SIGTERM, then the exit status.
  int stop() {
    signal(SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* err_ = nullptr;
  int port_ = 0;
  std::string log_;
};

json post_json(httplib::Client& c, const std::string& path, const json& body, int* status = nullptr) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  if (!r) throw std::runtime_error("no response from " + path);
  if (status) *status = r->status;
  return json::parse(r->body);
}

// What `gemma run` prints for a greedy chat (its text, without the final newline).
std::string gemma_run(const std::string& prompt, int tokens, const std::string& args = "") {
  const std::string cmd = std::string(GE_GEMMA_BIN) + " run --temp 0 -n " + std::to_string(tokens) + " -p '" +
                          prompt + "' " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// POSTs `body` and hands the response's bytes to `receive` as they arrive (false hangs up).
void post_streaming(httplib::Client& c, const std::string& path, const json& body,
                    const std::function<bool(const char*, size_t)>& receive) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) { return receive(data, n); };
  httplib::Response res;
  httplib::Error error;
  c.send(req, res, error);
}

json chat(const std::string& prompt, int tokens, bool stream) {
  return {{"model", "gemma3-tiny"},
          {"messages", {{{"role", "user"}, {"content", prompt}}}},
          {"stream", stream},
          {"options", {{"temperature", 0}, {"num_predict", tokens}}}};
}

// The text of a streamed /api/chat, and its last object.
std::string stream_chat(httplib::Client& c, const json& body, json* last = nullptr) {
  std::string buffer, text;
  auto r = c.Post("/api/chat", httplib::Headers{}, body.dump(), "application/json");
  if (!r) throw std::runtime_error("streamed chat failed: " + httplib::to_string(r.error()));
  if (r->status != 200)
    throw std::runtime_error("streamed chat failed: " + std::to_string(r->status) + " " + r->body);
  std::istringstream lines(r->body);
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line);
    text += j["message"]["content"].get<std::string>();
    if (last) *last = j;
  }
  return text;
}

TEST(Server, RealOllamaAndOpenAIClientsGetWhatGemmaRunPrints) {
  const std::filesystem::path node_dir = std::filesystem::path(GE_TEST_DATA).parent_path() / "node";
  ASSERT_TRUE(std::filesystem::exists(node_dir / "node_modules" / "ollama"))
      << "run scripts/setup.sh: it installs the npm clients into tests/node";
  ServerProcess server("--parallel 2");
  const std::string cmd = "node " + (node_dir / "clients.mjs").string() + " " + server.url() +
                          " gemma3-tiny 'Why is the sky blue?' 12";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << out;
  const json r = json::parse(out);
  const std::string expected = gemma_run("Why is the sky blue?", 12);
  ASSERT_FALSE(expected.empty());
  for (const char* key : {"ollama_chat", "ollama_chat_stream", "ollama_generate", "ollama_generate_stream",
                          "openai_chat", "openai_chat_stream"})
    EXPECT_EQ(r[key].get<std::string>(), expected) << key;
  EXPECT_EQ(r["openai_chat_usage"]["completion_tokens"], 12);
  EXPECT_EQ(r["openai_chat_stream_usage"]["completion_tokens"], 12);
  EXPECT_EQ(r["ollama_models"], json::array({"gemma3-tiny"}));
  EXPECT_EQ(r["openai_models"], json::array({"gemma3-tiny"}));
}

TEST(Server, BadRequestsGetA4xxWithAClearErrorAndTheServerKeepsServing) {
  ServerProcess server("--ctx 64 --max-body 100000");
  auto c = server.client();
  struct Case {
    const char* path;
    std::string body;
    int status;
    const char* says;  // part of the error message
  };
  const std::string big(200000, 'x');
  const std::vector<Case> cases = {
      {"/api/chat", "{not json", 400, "not valid JSON"},
      {"/api/chat", "[1, 2]", 400, "JSON object"},
      {"/api/chat", R"({"messages": [{"role": "user", "content": "hi"}]})", 400, "'model' is required"},
      {"/api/chat", R"({"model": 5, "messages": []})", 400, "'model' must be a string"},
      {"/api/chat", R"({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})", 404,
       "gemma3-tiny"},
      {"/api/chat", R"({"model": "gemma3-tiny", "messages": {"role": "user"}})", 400,
       "'messages' must be an array"},
      {"/api/chat", R"({"model": "gemma3-tiny", "messages": [{"content": "hi"}]})", 400, "role' is required"},
      {"/api/chat", R"({"model": "gemma3-tiny", "messages": [{"role": "model", "content": "hi"}]})", 400,
       "alternate"},
      {"/api/chat",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": -5}})",
       400, "num_predict"},
      {"/api/chat",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": "hot"}})",
       400, "temperature"},
      {"/api/chat",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": 1e999}})",
       400, "JSON"},
      {"/api/chat",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"top_p": 7}})",
       400, "top_p"},
      {"/api/chat",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi", "images": ["@@@"]}]})", 400,
       "base64"},
      {"/api/chat",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi", "images": ["aGVsbG8="]}]})",
       400, "text only"},
      {"/api/generate",
       R"({"model": "gemma3-tiny", "prompt": ")" + std::string(400, 'a') + " " + std::string(50, '.') +
           R"("})",
       400, "context"},
      {"/api/generate", R"({"model": "gemma3-tiny", "prompt": "hi", "stream": "yes"})", 400, "'stream'"},
      {"/api/generate", "{\"model\": \"gemma3-tiny\", \"prompt\": \"" + big + "\"}", 413, "larger"},
      {"/v1/chat/completions", "{oops", 400, "not valid JSON"},
      {"/v1/chat/completions", R"({"model": "gemma3-tiny", "messages": []})", 400, "non-empty array"},
      {"/v1/chat/completions", R"({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})", 404,
       "gemma3-tiny"},
      {"/v1/chat/completions",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2})", 400,
       "'n' must be 1"},
      {"/v1/chat/completions",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1})", 400,
       "max_tokens"},
      {"/v1/chat/completions", R"({"model": "gemma3-tiny", "messages": [{"role": "tool", "content": "hi"}]})",
       400, "role"},
      {"/v1/chat/completions",
       R"({"model": "gemma3-tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]})",
       400, "data URL"},
      {"/v1/completions", R"({"model": "gemma3-tiny", "prompt": 7})", 400, "'prompt'"},
      {"/v1/nothing", "{}", 404, "no such endpoint"},
  };
  for (const Case& k : cases) {
    auto r = c.Post(k.path, k.body, "application/json");
    ASSERT_TRUE(r) << k.path << " " << k.body.substr(0, 200);
    EXPECT_EQ(r->status, k.status) << k.path << " " << k.body.substr(0, 200) << " -> " << r->body;
    const json j = json::parse(r->body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r->body;
    // Ollama's {"error": "..."} and OpenAI's {"error": {"message": ...}}.
    const std::string message = std::string(k.path).starts_with("/v1/")
                                    ? j["error"]["message"].get<std::string>()
                                    : j["error"].get<std::string>();
    EXPECT_NE(message.find(k.says), std::string::npos) << k.path << ": " << message;
  }
  int status = 0;
  const json ok = post_json(c, "/api/chat", chat("Still there?", 4, false), &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(ok["eval_count"], 4);
}

TEST(Server, ListsShowsAndReportsItsModelsAndItsHealth) {
  ServerProcess server;
  auto c = server.client();
  EXPECT_EQ(c.Get("/")->body, "Ollama is running");
  EXPECT_EQ(json::parse(c.Get("/health")->body)["status"], "ready");
  const json tags = json::parse(c.Get("/api/tags")->body);
  ASSERT_EQ(tags["models"].size(), 1u);
  EXPECT_EQ(tags["models"][0]["name"], "gemma3-tiny");
  EXPECT_EQ(tags["models"][0]["details"]["family"], "gemma3");
  EXPECT_EQ(tags["models"][0]["details"]["format"], "safetensors");
  EXPECT_EQ(json::parse(c.Get("/api/ps")->body)["models"][0]["name"], "gemma3-tiny");
  const json show = post_json(c, "/api/show", {{"model", "gemma3-tiny:latest"}});
  EXPECT_EQ(show["model_info"]["gemma3.embedding_length"], 64);
  EXPECT_EQ(show["model_info"]["gemma3.attention.sliding_window"], 8);
  EXPECT_TRUE(json::parse(c.Get("/api/version")->body).contains("version"));
  EXPECT_EQ(json::parse(c.Get("/v1/models")->body)["data"][0]["id"], "gemma3-tiny");
  post_json(c, "/api/chat", chat("Count me", 5, false));
  // httplib logs a request (and /metrics counts it) just after sending its response.
  std::string metrics;
  for (int i = 0; i < 500 && metrics.find("path=\"/api/chat\"") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    metrics = c.Get("/metrics")->body;
  }
  EXPECT_NE(metrics.find("gemma_requests_total{path=\"/api/chat\",status=\"200\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("gemma_generated_tokens_total{model=\"gemma3-tiny\"} 5"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("gemma_slots{model=\"gemma3-tiny\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("# TYPE gemma_queue_length gauge"), std::string::npos);
}

TEST(Server, ApiKeyIsRequiredWhenSet) {
  ServerProcess server("--api-key sesame");
  auto c = server.client();
  auto r = c.Get("/v1/models");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "authentication_error");
  EXPECT_EQ(c.Get("/api/tags")->status, 401);
  EXPECT_EQ(c.Get("/health")->status, 200);  // load balancers probe without the key
  c.set_bearer_token_auth("sesame");
  EXPECT_EQ(c.Get("/v1/models")->status, 200);
}

TEST(Server, ThirtyTwoConcurrentStreamsEqualTheSameRequestsRunAlone) {
  ServerProcess server("--parallel 4 --queue 64");
  constexpr int kClients = 32;
  std::vector<std::string> prompts, concurrent(kClients);
  for (int i = 0; i < kClients; ++i)
    prompts.push_back("Client " + std::to_string(i) + std::string(i % 5, '!'));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kClients; ++i)
    threads.emplace_back([&, i] {
      try {
        auto c = server.client();
        concurrent[i] = stream_chat(c, chat(prompts[i], 16, true));
      } catch (const std::exception& e) {
        ADD_FAILURE() << "client " << i << ": " << e.what();
        ++failures;
      }
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures, 0);
  auto c = server.client();
  for (int i = 0; i < kClients; ++i) {
    json last;
    EXPECT_EQ(concurrent[i], stream_chat(c, chat(prompts[i], 16, true), &last)) << "client " << i;
    EXPECT_EQ(last["eval_count"], 16);
  }
  const std::string metrics = c.Get("/metrics")->body;
  // Batched decode ran: more sequence-steps than steps.
  const auto value = [&](const std::string& name) {
    const std::string key = name + "{model=\"gemma3-tiny\"} ";
    return std::stod(metrics.substr(metrics.find(key) + key.size()));
  };
  EXPECT_GT(value("gemma_decode_rows_total"), value("gemma_decode_steps_total") * 1.5);
}

// /metrics shows `gauge` = `value` within a few seconds.
bool wait_for_gauge(httplib::Client& c, const std::string& gauge, int value) {
  const std::string line = gauge + "{model=\"gemma3-tiny\"} " + std::to_string(value) + "\n";
  for (int i = 0; i < 500; ++i) {
    if (c.Get("/metrics")->body.find(line) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(Server, FullQueueAnswers503AndTheOthersStillFinish) {
  ServerProcess server("--parallel 1 --queue 1 --ctx 32768");
  auto c = server.client();
  std::atomic<int> done{0};
  const auto long_answer = [&](int i) {
    return std::thread([&, i] {
      try {
        auto own = server.client();
        json last;
        stream_chat(own, chat("Long answer " + std::to_string(i), 8000, true), &last);
        if (last["eval_count"] == 8000) ++done;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "long answer " << i << ": " << e.what();
      }
    });
  };
  std::thread answering = long_answer(0);
  ASSERT_TRUE(wait_for_gauge(c, "gemma_slots_busy", 1));
  std::thread waiting = long_answer(1);
  ASSERT_TRUE(wait_for_gauge(c, "gemma_queue_length", 1));
  int status = 0;
  const json refused = post_json(c, "/api/chat", chat("One too many", 4, false), &status);
  EXPECT_EQ(status, 503);
  EXPECT_NE(refused["error"].get<std::string>().find("busy"), std::string::npos) << refused.dump();
  answering.join();
  waiting.join();
  EXPECT_EQ(done, 2);
}

TEST(Server, ClientThatGoesAwayFreesItsSlotWithoutDisturbingOthers) {
  ServerProcess server("--parallel 2 --ctx 32768");
  auto endless = chat("Go on forever", -1, true);
  std::thread quitter([&] {
    auto c = server.client();
    int chunks = 0;
    post_streaming(c, "/api/chat", endless, [&](const char*, size_t) { return ++chunks < 3; });  // hangs up
  });
  auto c = server.client();
  const std::string expected = gemma_run("Meanwhile", 20);
  EXPECT_EQ(stream_chat(c, chat("Meanwhile", 20, true)), expected);
  quitter.join();
  // The abandoned answer is cancelled: both slots are free again soon.
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    freed = c.Get("/metrics")->body.find("gemma_slots_busy{model=\"gemma3-tiny\"} 0") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(freed);
}

TEST(Server, SigtermFinishesRunningStreamsThenExits) {
  ServerProcess server("--ctx 32768");
  std::atomic<bool> started{false};
  std::string text;
  json last;
  std::thread client([&] {
    auto c = server.client();
    std::string buffer;
    post_streaming(c, "/api/chat", chat("A long answer please", 3000, true), [&](const char* data, size_t n) {
      buffer.append(data, n);
      started = true;
      return true;
    });
    std::istringstream lines(buffer);
    for (std::string line; std::getline(lines, line);) last = json::parse(line);
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server.signal(SIGTERM);
  client.join();
  EXPECT_EQ(last["done"], true);
  EXPECT_EQ(last["eval_count"], 3000);
  EXPECT_EQ(server.stop(), 0);
}

std::string base64(const std::vector<char>& bytes) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 2]);
    out += a[v >> 18];
    out += a[v >> 12 & 63];
    out += i + 1 < bytes.size() ? a[v >> 6 & 63] : '=';
    out += i + 2 < bytes.size() ? a[v & 63] : '=';
  }
  return out;
}

TEST(Server, ImagesThroughBothApisAnswerAsGemmaRunDoes) {
  const auto model = test::data_dir() / "gemma3-tiny-vision";
  const auto image = model / "reference_image.png";
  ServerProcess server("-m " + model.string());
  auto c = server.client();
  const std::string b64 = base64(test::read_bytes(image));
  const std::string expected =
      gemma_run("Tell me a story", 8, "-m " + model.string() + " --image " + image.string());
  ASSERT_FALSE(expected.empty());
  json ollama = chat("Tell me a story", 8, false);
  ollama["model"] = "gemma3-tiny-vision";
  ollama["messages"][0]["images"] = {b64};
  int status = 0;
  const json a = post_json(c, "/api/chat", ollama, &status);
  ASSERT_EQ(status, 200) << a.dump();
  EXPECT_EQ(a["message"]["content"], expected);
  const json openai = {{"model", "gemma3-tiny-vision"},
                       {"temperature", 0},
                       {"max_tokens", 8},
                       {"messages",
                        {{{"role", "user"},
                          {"content",
                           {{{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64," + b64}}}},
                            {{"type", "text"}, {"text", "Tell me a story"}}}}}}}};
  const json b = post_json(c, "/v1/chat/completions", openai, &status);
  ASSERT_EQ(status, 200) << b.dump();
  EXPECT_EQ(b["choices"][0]["message"]["content"], expected);
  // Bytes that are base64 but no image.
  ollama["messages"][0]["images"] = {base64({'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'})};
  const json bad = post_json(c, "/api/chat", ollama, &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(bad["error"].get<std::string>().find("image 1"), std::string::npos) << bad.dump();
}

// A second turn re-sends the first answer as text: its tokens differ from those generated (the demo
// model's bytes come back as U+FFFD), so the slot shares the sequence only up to the first prompt's end,
// far past the sliding window with 8-token prompt steps. The ring snapshot there keeps the first turn.
TEST(Server, SecondTurnRunsOnlyItsNewTokensAndAnswersAsACold) {
  const json turn1 = chat("Tell me about foxes", 40, false);
  ServerProcess warm("--batch 8"), cold("--batch 8");
  auto w = warm.client(), k = cold.client();
  const json first = post_json(w, "/api/chat", turn1);
  json turn2 = turn1;
  turn2["messages"].push_back({{"role", "assistant"}, {"content", first["message"]["content"]}});
  turn2["messages"].push_back({{"role", "user"}, {"content", "And about dogs?"}});
  const json second = post_json(w, "/api/chat", turn2);
  const json from_cold = post_json(k, "/api/chat", turn2);
  EXPECT_EQ(second["message"]["content"], from_cold["message"]["content"]);
  const int64_t all = from_cold["prompt_eval_count"], prompt1 = first["prompt_eval_count"];
  EXPECT_LE(second["prompt_eval_count"].get<int64_t>(), all - prompt1 + 1);
  EXPECT_GT(all, prompt1 + 40 / 4);
}

// Gemma 4's thinking switch reaches its template through both APIs (the prompt counts the tokens of the
// published template's render with or without it), a model without one refuses it, /api/show lists the
// capability, and no thinking mark is left in an answer.
TEST(Server, ThinkingSwitchRendersGemma4sThinkingPromptAndOthersRefuseIt) {
  const auto gemma4 = test::data_dir() / "gemma4-tiny";
  ServerProcess server("-m " + gemma4.string() + " -m " + test::demo_model_dir().string());
  auto c = server.client();
  const Tokenizer tokenizer = Tokenizer::load(gemma4);
  const std::vector<runtime::ChatMessage> hi = {{"user", "Hi", 0}};
  const auto prompt_tokens = [&](bool thinking) {
    return static_cast<int64_t>(
        tokenizer.encode(runtime::render_chat(hi, true, runtime::ChatFormat::kGemma4, thinking), false).size());
  };
  ASSERT_NE(prompt_tokens(true), prompt_tokens(false));
  const auto no_marks = [](const json& message) {
    for (const char* field : {"content", "thinking", "reasoning_content"}) {
      if (!message.contains(field)) continue;
      const std::string text = message[field];
      EXPECT_EQ(text.find("<|channel>"), std::string::npos) << field << ": " << text;
      EXPECT_EQ(text.find("<channel|>"), std::string::npos) << field << ": " << text;
    }
  };
  // Ollama counts the prompt tokens it ran (the first request is cold), OpenAI every prompt token.
  for (const bool think : {true, false}) {
    json body = chat("Hi", 3, false);
    body["model"] = "gemma4-tiny";
    body["think"] = think;
    const json r = post_json(c, "/api/chat", body);
    if (think) {
      EXPECT_EQ(r["prompt_eval_count"], prompt_tokens(true)) << r;
    }
    no_marks(r["message"]);
  }
  for (const auto& [switch_json, think] :
       {std::pair{json{{"reasoning_effort", "high"}}, true}, std::pair{json{{"reasoning_effort", "none"}}, false},
        std::pair{json{{"chat_template_kwargs", {{"enable_thinking", true}}}}, true}, std::pair{json::object(), false}}) {
    json body = {{"model", "gemma4-tiny"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 3},
                 {"temperature", 0}};
    body.update(switch_json);
    const json r = post_json(c, "/v1/chat/completions", body);
    EXPECT_EQ(r["usage"]["prompt_tokens"], prompt_tokens(think)) << r;
    no_marks(r["choices"][0]["message"]);
  }
  int status = 0;
  json body = chat("Hi", 3, false);
  body["think"] = true;
  json e = post_json(c, "/api/chat", body, &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(e["error"], "model 'gemma3-tiny' does not support thinking");
  e = post_json(c, "/v1/chat/completions",
                {{"model", "gemma3-tiny"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"reasoning_effort", "low"}},
                &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(e["error"]["message"], "model 'gemma3-tiny' does not support thinking");
  body["think"] = "very";
  post_json(c, "/api/chat", body, &status);
  EXPECT_EQ(status, 400);
  const auto capabilities = [&](const std::string& model) {
    return post_json(c, "/api/show", {{"model", model}})["capabilities"].get<std::vector<std::string>>();
  };
  EXPECT_EQ(capabilities("gemma4-tiny"), (std::vector<std::string>{"completion", "thinking"}));
  EXPECT_EQ(capabilities("gemma3-tiny"), (std::vector<std::string>{"completion"}));
}

}  // namespace
}  // namespace ge
