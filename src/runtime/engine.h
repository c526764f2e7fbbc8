// Many requests on one model: `parallel` slots, each a sequence with its own KV cache, served by one
// thread that interleaves them. Decode steps of every answering slot run as one batched forward pass (one
// pass over the weights serves all of them: on a bandwidth-bound CPU that is where serving gains), and a
// long prompt runs in chunks between those steps so that it never stalls the others' answers for its
// whole length. A request that finds a slot holding the start of its prompt (a chat's earlier turns, a
// regenerated answer) reuses it (Generator::begin). Frontends (the HTTP server) submit Jobs and read
// their text as it comes.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/generator.h"
#include "runtime/prompt_images.h"

namespace ge::runtime {

// One request, shared by the frontend that waits on it and the engine that runs it.
class Job {
 public:
  Job(std::vector<int32_t> prompt, std::vector<PreparedImage> images, SamplingParams sampling,
      GenerateOptions options);

  // What the job produced since the last call: text, and once it ended, done with its stats (or an error).
  struct Progress {
    std::string text;
    bool done = false;
    GenerateStats stats;
    std::string error;
  };
  // Blocks until there is new text, the job ended or `timeout` passed (a frontend then checks its client).
  Progress wait(std::chrono::milliseconds timeout);
  // The engine frees the job's slot at its next step (a client that went away).
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Engine;
  void emit(std::string_view text);
  void finish(const GenerateStats& stats, std::string error = {});

  std::vector<int32_t> prompt_tokens_;
  std::vector<PreparedImage> images_;
  SamplingParams sampling_;
  GenerateOptions options_;
  std::atomic<bool> cancelled_{false};

  std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_;
  bool done_ = false;
  GenerateStats stats_;
  std::string error_;
};

struct EngineOptions {
  int parallel = 1;                // slots
  int64_t context = 4096;          // positions per slot
  DType kv_type = DType::F32;      // F32 or F16
  size_t max_queue = 64;           // jobs waiting for a slot; submit() refuses more
  int64_t interleaved_chunk = 64;  // prompt tokens per step while other slots are answering
};

// Counters for /metrics; all cumulative except the gauges queued and active.
struct EngineStats {
  int64_t jobs = 0, prompt_tokens = 0, reused_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0, decode_rows = 0;  // batched steps and the rows they ran (their mean batch)
  int64_t queued = 0, active = 0, slots = 0;
};

// The engine's thread is the only one that may use the model and the pool while the engine lives (the
// model's activations and the pool's workers serve one caller at a time).
class Engine {
 public:
  Engine(models::CausalLM& model, const Tokenizer& tokenizer, kernels::ThreadPool& pool,
         siglip::Gemma3VisionEncoder* encoder, const EngineOptions& options);
  ~Engine();  // cancels what still runs
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineOptions& options() const { return options_; }
  // Checks a job (sampling parameters, ids in the vocabulary, images matching its image runs, within the
  // context) before it is queued; throws std::invalid_argument naming the problem.
  void check(const Job& job) const;
  // Queues a job; false when the queue is full.
  bool submit(std::shared_ptr<Job> job);
  // Stops taking jobs and returns once every queued and running one has finished.
  void drain();
  EngineStats stats() const;

 private:
  struct Active {
    std::shared_ptr<Job> job;
    Prompt prompt;
    Prefill prefill;
    std::unique_ptr<Sampler> sampler;
    std::unique_ptr<Completion> completion;
    std::optional<int32_t> next;  // the token to run at the next decode step
    bool answering = false;       // the prompt is in
    uint64_t order = 0;           // admission order: prompts run first come, first served
  };

  void loop();
  void admit();
  size_t pick_slot(const Prompt& prompt) const;
  void start(size_t slot, std::shared_ptr<Job> job);
  void prefill_step(size_t slot, int64_t max_tokens);
  void decode_step();
  void take(size_t slot, std::span<float> logits);
  void finish(size_t slot, std::string error = {});

  models::CausalLM& model_;
  const Tokenizer& tokenizer_;
  EngineOptions options_;
  Generator generator_;
  std::vector<Slot> slots_;
  std::vector<std::unique_ptr<Active>> active_;  // per slot; null when free
  std::vector<uint64_t> last_used_;              // per slot: the step it last served, for LRU choice
  uint64_t step_ = 0, admitted_ = 0;
  std::vector<float> logits_;  // [slots, vocab]
  std::vector<Slot*> batch_slots_;
  std::vector<int32_t> batch_tokens_;
  std::vector<size_t> batch_index_;

  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false, draining_ = false;
  EngineStats stats_;
  std::thread thread_;
};

}  // namespace ge::runtime
