// `gemma run`: chat (Gemma's template) or raw completion, streamed token by token; a REPL without -p.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>

#include <unistd.h>

#include "cli/common.h"
#include "loader/model_loader.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/prompt_images.h"
#include "runtime/thinking.h"

namespace ge::cli {

namespace {

struct RunOptions {
  std::string model = default_model_dir();
  std::string prompt;
  std::string system;
  bool raw = false;
  bool think = false;
  bool hide_thinking = false;
  std::optional<float> temperature, top_p, min_p, repeat_penalty;
  std::optional<int> top_k;
  int repeat_last_n = 64;
  std::optional<uint64_t> seed;
  std::optional<int64_t> max_new_tokens;  // -n; without it, the model's generation_config.json decides
  int64_t context = 0;
  int64_t batch = 256;
  int threads = default_threads();
  std::vector<std::string> stop;
  PrecisionFlags precision;
  std::string kv_type = "f32";
  std::vector<std::string> images;  // attached to -p (or to the first message of the chat)
  bool pan_and_scan = false;
  std::string mmproj;
};

runtime::SamplingParams sampling(const RunOptions& o, runtime::SamplingParams s) {
  if (o.temperature) s.temperature = *o.temperature;
  if (o.top_k) s.top_k = *o.top_k;
  if (o.top_p) s.top_p = *o.top_p;
  if (o.min_p) s.min_p = *o.min_p;
  if (o.repeat_penalty) s.repeat_penalty = *o.repeat_penalty;
  s.repeat_last_n = o.repeat_last_n;
  s.seed =
      o.seed ? *o.seed : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return s;
}

void print_stats(double load_seconds, const runtime::GenerateStats& s, const nn::KVCache& cache) {
  const auto rate = [](int64_t n, double sec) { return sec > 0 ? static_cast<double>(n) / sec : 0.0; };
  if (s.images_encoded)
    std::fprintf(stderr, "\nimage encode:         %lld image(s) in %.3fs", static_cast<long long>(s.images_encoded),
                 s.image_seconds);
  std::fprintf(stderr,
               "\nload duration:        %.3fs\n"
               "kv cache:             %.1f MiB (%s)\n"
               "prompt eval count:    %lld token(s) (%lld reused from the cache)\n"
               "prompt eval duration: %.3fs\n"
               "prompt eval rate:     %.2f tokens/s\n"
               "eval count:           %lld token(s)\n"
               "eval duration:        %.3fs\n"
               "eval rate:            %.2f tokens/s\n",
               load_seconds, static_cast<double>(cache.bytes()) / (1 << 20),
               cache.dtype() == DType::F16 ? "f16" : "f32", static_cast<long long>(s.prompt_tokens),
               static_cast<long long>(s.reused_tokens), s.prompt_seconds,
               rate(s.prompt_tokens, s.prompt_seconds), static_cast<long long>(s.generated_tokens),
               s.decode_seconds, rate(s.generated_tokens, s.decode_seconds));
}

// Prints an answer as it streams; a Gemma 4 thought goes apart, as Ollama's CLI shows it: "Thinking..." and
// "...done thinking." around it (dimmed on a terminal), or nowhere with --hide-thinking.
class AnswerPrinter {
 public:
  AnswerPrinter(bool split_thoughts, bool hide_thinking)
      : split_(split_thoughts), hide_(hide_thinking), dim_(isatty(STDOUT_FILENO)) {}

  void print(std::string_view piece) {
    if (!split_) {
      std::cout << piece << std::flush;
      return;
    }
    show(splitter_.push(piece));
  }
  void finish() {
    if (split_) show(splitter_.flush());
    if (open_) close_thought();
  }

 private:
  void show(const runtime::ThoughtSplitter::Parts& parts) {
    if (!parts.thinking.empty() && !hide_) {
      if (!open_) std::cout << (dim_ ? "\x1b[2m" : "") << "Thinking...\n";
      open_ = true;
      std::cout << parts.thinking;
    }
    if (open_ && !splitter_.in_thought()) close_thought();
    std::cout << parts.answer << std::flush;
  }
  void close_thought() {
    std::cout << "\n...done thinking." << (dim_ ? "\x1b[0m" : "") << "\n\n";
    open_ = false;
  }

  runtime::ThoughtSplitter splitter_;
  bool split_, hide_, dim_;
  bool open_ = false;  // a thought is being shown
};

class Chat {
 public:
  Chat(const RunOptions& o, loader::LoadedModel& m, kernels::ThreadPool& pool, double load_seconds)
      : o_(o),
        m_(m),
        load_seconds_(load_seconds),
        generator_(*m.model, m.tokenizer, pool),
        slot_(*m.model, o.context, kv_cache_type(o.kv_type)),
        sampler_(sampling(o, m.defaults.sampling), static_cast<int32_t>(m.model->shape().vocab_size)) {
    options_.eos_ids = m.defaults.eos_ids;
    options_.stop = o.stop;
    // Chat answers end with the end of the turn even when generation_config.json lists only <eos>.
    if (auto eot = m.tokenizer.find(runtime::end_of_turn(m.chat_format)); eot && !o.raw)
      options_.eos_ids.push_back(*eot);
    if (!o.system.empty()) history_.push_back({"system", o.system, 0});
    for (const std::string& path : o.images) attach(path);
  }

  // Reads and preprocesses an image for the next message.
  void attach(const std::string& path) {
    loader::VisionPart& v = vision_of(m_, o_.model);
    pending_.push_back(runtime::prepare_image_file(path, v.processor, o_.pan_and_scan || v.processor.do_pan_and_scan,
                                                   v.config.mm_tokens_per_image));
    generator_.set_vision_encoder(&v.bind());
  }

  // One user turn: renders the whole conversation; the slot reuses the cached prefix of earlier turns
  // (images included: an image already in the cache is not encoded again).
  void turn(const std::string& text) {
    const auto n_new = static_cast<int64_t>(pending_.size());
    images_.insert(images_.end(), std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
    pending_.clear();
    std::string prompt;
    if (o_.raw) {  // images go first, as in a chat message
      for (int64_t i = 0; i < n_new; ++i) prompt += "<start_of_image>";
      prompt += text;
    } else {
      history_.push_back({"user", text, n_new});
      prompt = runtime::render_chat(history_, true, m_.chat_format, o_.think);
    }
    const auto ids = m_.tokenizer.encode(runtime::expand_image_markers(prompt, runtime::prompt_texts(images_)),
                                         o_.raw && m_.tokenizer.add_bos_default());
    const auto parts = runtime::prompt_parts(images_);
    options_.max_new_tokens =
        o_.max_new_tokens.value_or(m_.defaults.answer_limit(static_cast<int64_t>(ids.size())));
    std::string answer;
    AnswerPrinter printer(m_.chat_format == runtime::ChatFormat::kGemma4 && !o_.raw, o_.hide_thinking);
    const auto stats = generator_.generate(slot_, ids, sampler_, options_, [&](std::string_view piece) {
      printer.print(piece);
      answer += piece;
      return true;
    }, parts);
    printer.finish();
    std::cout << "\n";
    if (!o_.raw) history_.push_back({"model", answer, 0});
    if (o_.raw) images_.clear();
    if (stats.stop == runtime::StopReason::kContextFull)
      std::cerr << "gemma: context of " << o_.context << " tokens is full (raise --ctx)\n";
    print_stats(load_seconds_, stats, slot_.cache);
  }

 private:
  const RunOptions& o_;
  loader::LoadedModel& m_;
  double load_seconds_;
  runtime::Generator generator_;
  runtime::Slot slot_;
  runtime::Sampler sampler_;
  runtime::GenerateOptions options_;
  std::vector<runtime::ChatMessage> history_;
  std::vector<runtime::PreparedImage> images_;   // of the whole conversation, in prompt order
  std::vector<runtime::PreparedImage> pending_;  // for the next message
};

void repl(Chat& chat) {
  std::cerr << "Type a message; /image PATH attaches an image to the next one; /bye or Ctrl-D quits.\n";
  std::string line;
  for (;;) {
    std::cout << ">>> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/bye") break;
    if (line.empty()) continue;
    if (line.starts_with("/image ")) {
      try {
        chat.attach(line.substr(7));
        std::cerr << "attached " << line.substr(7) << " to the next message\n";
      } catch (const std::exception& e) {
        std::cerr << "gemma: " << e.what() << "\n";
      }
      continue;
    }
    chat.turn(line);
  }
  std::cout << "\n";
}

void run(RunOptions& o, bool prompt_given) {
  if (prompt_given && o.prompt.empty())
    throw std::runtime_error("-p: empty prompt (leave -p out for a chat)");
  const auto start = std::chrono::steady_clock::now();
  kernels::ThreadPool pool(o.threads);
  const hub::ModelLocation where = locate(o.model, o.mmproj);
  auto m = loader::load_model(where.path, o.batch, where.mmproj);
  apply_precision(*m.model, o.precision);
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.context <= 0) o.context = std::min<int64_t>(8192, m.model->shape().max_position_embeddings);
  if (std::filesystem::equivalent(where.path, default_model_dir()))
    std::cerr
        << "note: the bundled demo model has random weights: its text is nonsense. Use -m DIR for a real "
           "Gemma checkpoint.\n";
  Chat chat(o, m, pool, load_seconds);
  if (o.prompt.empty())
    repl(chat);
  else
    chat.turn(o.prompt);
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd =
      app.add_subcommand("run", "Chat with a model (or complete text with --raw); a REPL without -p");
  add_model_option(cmd, o->model);
  auto* prompt = cmd->add_option("-p,--prompt", o->prompt, "Prompt; without it, an interactive chat");
  cmd->add_option(
      "--system", o->system,
      "System prompt, folded into the first user turn for every Gemma (Gemma 1/2 templates have no system "
      "role; Gemma 3's folds it the same way)");
  cmd->add_flag("--raw", o->raw, "Plain completion of the prompt, no chat template");
  cmd->add_flag("--think", o->think, "Let the model think before it answers (Gemma 4's thinking mode)");
  cmd->add_flag("--hide-thinking", o->hide_thinking,
                "Do not print a Gemma 4 model's thought (shown dimmed, between \"Thinking...\" and \"...done "
                "thinking.\", by default)");
  cmd->add_option("--temp", o->temperature, "Temperature (0 = greedy); default from generation_config.json");
  cmd->add_option("--top-k", o->top_k, "Top-k (0 = off)");
  cmd->add_option("--top-p", o->top_p, "Top-p / nucleus (1 = off)");
  cmd->add_option("--min-p", o->min_p, "Min-p (0 = off)");
  cmd->add_option("--repeat-penalty", o->repeat_penalty, "Repetition penalty (1 = off)");
  cmd->add_option("--repeat-last-n", o->repeat_last_n, "Tokens the repetition penalty looks back over")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Random seed for reproducible sampling");
  cmd->add_option(
      "-n,--max-tokens", o->max_new_tokens,
      "Most tokens to generate (-1 = until EOS); default: generation_config.json's max_new_tokens "
      "(or max_length, prompt included), else until EOS");
  cmd->add_option("--ctx", o->context, "Context length (default min(8192, max_position_embeddings))");
  cmd->add_option("-b,--batch", o->batch, "Prompt tokens per forward step")
      ->capture_default_str()
      ->check(CLI::Range(1, 8192));
  cmd->add_option("-t,--threads", o->threads, "Threads")->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--stop", o->stop, "Stop string (repeatable)");
  cmd->add_option("--image", o->images, "Image for the prompt (repeatable; PNG, JPEG, WebP, GIF, BMP)");
  cmd->add_flag("--pan-and-scan", o->pan_and_scan,
                "Also show the model crops of images whose aspect ratio is far from square (Gemma3Processor's "
                "pan and scan); on by default when preprocessor_config.json says do_pan_and_scan");
  cmd->add_option("--mmproj", o->mmproj, "llama.cpp vision file (clip GGUF) for a GGUF model");
  add_precision_flags(cmd, o->precision);
  add_kv_type_option(cmd, o->kv_type);
  cmd->callback([o, prompt] { run(*o, prompt->count() > 0); });
}

}  // namespace ge::cli
