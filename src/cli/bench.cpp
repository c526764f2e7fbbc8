// `gemma bench`: prompt-processing and decode speed, printed in llama-bench's table form so the two can
// be compared side by side.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>

#include "cli/common.h"
#include "kernels/bandwidth.h"
#include "kernels/matmul.h"
#include "loader/model_loader.h"
#include "runtime/prompt_images.h"

namespace ge::cli {

namespace {

struct BenchOptions {
  std::string model = default_model_dir();
  int64_t prompt = 64;
  int64_t generate = 16;
  int threads = default_threads();
  int repetitions = 5;
  int64_t batch = 256;
  bool bandwidth = false;
  PrecisionFlags precision;
  std::string image;
  std::string mmproj;
};

struct Summary {
  double median, mean, stddev;
};

Summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  for (double x : v) var += (x - mean) * (x - mean);
  const double sd = v.size() > 1 ? std::sqrt(var / static_cast<double>(v.size() - 1)) : 0.0;
  const size_t n = v.size();
  return {n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, mean, sd};
}

double seconds(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// tok/s of each repetition, after one warm-up run, as llama-bench does.
std::vector<double> repeat(int reps, int64_t tokens, const std::function<void()>& run) {
  run();
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) rates.push_back(static_cast<double>(tokens) / seconds(run));
  return rates;
}

// One image through the vision encoder (median of the repetitions after a warm-up), then the prefill of
// its soft tokens as one bidirectional block, with the share of the FMA peak the encoder reaches.
void bench_image(const BenchOptions& o, loader::LoadedModel& m, kernels::ThreadPool& pool) {
  loader::VisionPart& v = vision_of(m, o.model);
  const auto image = runtime::prepare_image_file(o.image, v.processor, false, v.config.mm_tokens_per_image);
  siglip::Gemma3VisionEncoder& encoder = v.bind();
  models::CausalLM& model = *m.model;
  const int64_t tokens = v.config.mm_tokens_per_image, hidden = model.shape().hidden_size;
  std::vector<float> features(tokens * hidden);
  const auto encode = [&] { encoder.encode(image.pixels.data.data(), pool, features.data()); };
  const Summary enc = summarize(repeat(o.repetitions, 1, encode));  // images per second

  std::vector<int32_t> ids = {v.config.boi_token_id};
  ids.insert(ids.end(), tokens, v.config.image_token_id);
  ids.push_back(v.config.eoi_token_id);
  const models::EmbeddingBlock block{1, tokens, features.data()};
  auto cache = model.make_cache(static_cast<int64_t>(ids.size()));
  std::vector<float> logits(model.shape().vocab_size);
  const Summary prefill = summarize(repeat(o.repetitions, static_cast<int64_t>(ids.size()), [&] {
    model.forward(ids, 0, cache, pool, logits.data(), false, nullptr, std::span(&block, 1));
  }));
  const double seconds = 1.0 / enc.median, gflop = encoder.flops_per_image() / 1e9;
  const double peak = kernels::measure_fma_peak_gflops(pool);
  const auto& vc = v.config.vision;
  std::printf("image encode (%lld layers, hidden %lld, %lld patches of %lldx%lld, %s): %.2f s per image (median of %d), "
              "%.0f GFLOP -> %.1f GFLOP/s = %.0f%% of the %.0f GFLOP/s f32 FMA peak of %d thread(s)\n",
              static_cast<long long>(vc.num_layers), static_cast<long long>(vc.hidden_size),
              static_cast<long long>(vc.num_patches()), static_cast<long long>(vc.image_size),
              static_cast<long long>(vc.image_size), kernels::matmul_target(), seconds, o.repetitions, gflop,
              gflop / seconds, 100.0 * gflop / seconds / peak, peak, o.threads);
  std::printf("image prefill: %zu tokens (<start_of_image>, %lld soft tokens, <end_of_image>) at %.2f tok/s\n",
              ids.size(), static_cast<long long>(tokens), prefill.median);
}

// Resident set size of this process (/proc/self/statm; 0 where there is none).
size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

void bench(const BenchOptions& o) {
  kernels::ThreadPool pool(o.threads);
  const hub::ModelLocation where = locate(o.model, o.mmproj);
  auto m = loader::load_model(where.path, o.batch, where.mmproj);
  if (!o.image.empty()) return bench_image(o, m, pool);
  models::CausalLM& model = *m.model;
  apply_precision(model, o.precision);
  const auto c = model.shape();
  auto cache = model.make_cache(std::max<int64_t>(o.prompt, o.generate) + 1);
  std::vector<float> logits(c.vocab_size);

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.vocab_size - 1));
  std::vector<int32_t> prompt(o.prompt);
  for (auto& t : prompt) t = pick(rng);

  size_t bytes = 0;  // of the text model in its files
  int64_t params = 0;
  for (const Tensor* t : m.tensors->all()) {
    if (siglip::is_vision_tensor(t->name)) continue;
    bytes += t->nbytes;
    params += m.layers->parameter_count(*t);
  }
  const size_t per_token = model.weight_bytes_per_token();
  const size_t resident_loaded = resident_bytes();
  const std::string dtype = model.matrix_formats();
  char name[128];
  std::snprintf(name, sizeof name, "%s %.0fM %s%s", model.family_name(), static_cast<double>(params) / 1e6,
                dtype.c_str(), o.precision.exact ? " (exact)" : "");

  std::printf(
      "| model                          |       size |     params | backend    | threads |  test |"
      "                  t/s |\n");
  std::printf(
      "| ------------------------------ | ---------: | ---------: | ---------- | ------: | ----: |"
      " -------------------: |\n");
  const auto row = [&](const char* test, const Summary& s) {
    std::printf("| %-30s | %6.2f MiB | %8.2f M | CPU %-6s | %7d | %5s | %10.2f ± %7.2f |\n", name,
                static_cast<double>(bytes) / (1 << 20), static_cast<double>(params) / 1e6,
                kernels::matmul_target(), o.threads, test, s.median, s.stddev);
    std::fflush(stdout);
  };
  size_t resident_prompt = 0;
  if (o.prompt > 0) {
    const auto s = summarize(repeat(o.repetitions, o.prompt,
                                    [&] { model.forward(prompt, 0, cache, pool, logits.data(), false); }));
    row(("pp" + std::to_string(o.prompt)).c_str(), s);
    resident_prompt = resident_bytes();
  }
  Summary decode{};
  if (o.generate > 0) {
    decode = summarize(repeat(o.repetitions, o.generate, [&] {
      int32_t token = prompt.empty() ? 2 : prompt[0];
      for (int64_t i = 0; i < o.generate; ++i) {
        model.forward(std::span<const int32_t>(&token, 1), i, cache, pool, logits.data(), false);
        token = pick(rng);
      }
    }));
    row(("tg" + std::to_string(o.generate)).c_str(), decode);
  }
  std::printf(
      "\nt/s is the median of %d runs ± their standard deviation. Weights read per decoded token: %.1f MB "
      "(every matrix a token multiplies by, once; of the experts only the routed ones; the tied LM head is the "
      "embedding table).\n",
      o.repetitions, static_cast<double>(per_token) / 1e6);
  std::printf("Resident memory: %.0f MiB after loading", static_cast<double>(resident_loaded) / (1 << 20));
  if (resident_prompt)
    std::printf(", %.0f MiB after pp%" PRId64 " (%" PRId64 " random ids)", static_cast<double>(resident_prompt) / (1 << 20),
                o.prompt, o.prompt);
  std::printf(" (cache: %.0f MiB).\n", static_cast<double>(cache.bytes()) / (1 << 20));
  if (o.bandwidth && o.generate > 0) {
    const double gbs = kernels::measure_read_bandwidth_gbs(pool, size_t{1} << 30);
    const double used = decode.median * static_cast<double>(per_token) / 1e9;
    std::printf(
        "Measured read bandwidth: %.1f GB/s; decode reads %.1f GB/s of weights = %.0f%% of it (ceiling "
        "%.1f tok/s).\n",
        gbs, used, 100.0 * used / gbs, gbs * 1e9 / static_cast<double>(per_token));
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prompt (pp) and decode (tg) speed, llama-bench style");
  add_model_option(cmd, o->model);
  cmd->add_option("-p,--n-prompt", o->prompt, "Prompt tokens")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", o->generate, "Generated tokens")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-t,--threads", o->threads, "Threads")->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("-r,--repetitions", o->repetitions, "Repetitions")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("-b,--batch", o->batch, "Prompt tokens per forward step")
      ->capture_default_str()
      ->check(CLI::Range(1, 8192));
  cmd->add_flag("--bandwidth", o->bandwidth,
                "Also measure memory read bandwidth and the share decode reaches");
  cmd->add_option("--image", o->image, "Measure the vision encoder on this image instead (and its tokens' prefill)");
  cmd->add_option("--mmproj", o->mmproj, "llama.cpp vision file (clip GGUF) for a GGUF model");
  add_precision_flags(cmd, o->precision);
  cmd->callback([o] { bench(*o); });
}

}  // namespace ge::cli
