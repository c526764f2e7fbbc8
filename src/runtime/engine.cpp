#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace ge::runtime {

using Clock = std::chrono::steady_clock;

Job::Job(std::vector<int32_t> prompt, std::vector<PreparedImage> images, SamplingParams sampling,
         GenerateOptions options)
    : prompt_tokens_(std::move(prompt)),
      images_(std::move(images)),
      sampling_(sampling),
      options_(std::move(options)) {}

Job::Progress Job::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return !pending_.empty() || done_; });
  Progress p;
  p.text = std::exchange(pending_, {});
  if (done_) {
    p.done = true;
    p.stats = stats_;
    p.error = error_;
  }
  return p;
}

void Job::emit(std::string_view text) {
  {
    std::lock_guard lock(mutex_);
    pending_ += text;
  }
  changed_.notify_all();
}

void Job::finish(const GenerateStats& stats, std::string error) {
  {
    std::lock_guard lock(mutex_);
    done_ = true;
    stats_ = stats;
    error_ = std::move(error);
  }
  changed_.notify_all();
}

Engine::Engine(models::CausalLM& model, const Tokenizer& tokenizer, kernels::ThreadPool& pool,
               siglip::Gemma3VisionEncoder* encoder, const EngineOptions& options)
    : model_(model), tokenizer_(tokenizer), options_(options), generator_(model, tokenizer, pool) {
  if (options_.parallel < 1) throw std::invalid_argument("--parallel must be at least 1");
  generator_.set_vision_encoder(encoder);
  for (int i = 0; i < options_.parallel; ++i) slots_.emplace_back(model, options_.context, options_.kv_type);
  active_.resize(slots_.size());
  last_used_.assign(slots_.size(), 0);
  logits_.resize(slots_.size() * static_cast<size_t>(model.shape().vocab_size));
  stats_.slots = options_.parallel;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Engine::check(const Job& job) const {
  const auto vocab = model_.shape().vocab_size;
  validated(job.sampling_, static_cast<int32_t>(vocab));
  for (size_t i = 0; i < job.prompt_tokens_.size(); ++i)
    if (job.prompt_tokens_[i] < 0 || job.prompt_tokens_[i] >= vocab)
      throw std::invalid_argument("token id " + std::to_string(job.prompt_tokens_[i]) +
                                  " at prompt position " + std::to_string(i) +
                                  " is outside the vocabulary of " + std::to_string(vocab));
  if (static_cast<int64_t>(job.prompt_tokens_.size()) > options_.context)
    throw std::invalid_argument("the prompt has " + std::to_string(job.prompt_tokens_.size()) +
                                " tokens, more than the context of " + std::to_string(options_.context));
  generator_.prepare(job.prompt_tokens_, prompt_parts(job.images_));
}

bool Engine::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mutex_);
    if (draining_ || stopping_ || queue_.size() >= options_.max_queue) return false;
    queue_.push_back(std::move(job));
    stats_.queued = static_cast<int64_t>(queue_.size());
  }
  wake_.notify_all();
  return true;
}

void Engine::drain() {
  std::unique_lock lock(mutex_);
  draining_ = true;
  idle_.wait(lock, [&] { return queue_.empty() && stats_.active == 0; });
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      const auto busy = [&] {
        return std::any_of(active_.begin(), active_.end(), [](const auto& a) { return a != nullptr; });
      };
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || busy(); });
      if (stopping_) break;
    }
    admit();
    for (size_t s = 0; s < active_.size(); ++s)
      if (active_[s] && active_[s]->job->cancelled()) {
        active_[s]->completion->stats().stop = StopReason::kCancelled;
        finish(s);
      }
    // The prompt that came first runs a chunk, short while others are answering, so that their next
    // tokens wait for one chunk at most.
    const bool answering =
        std::any_of(active_.begin(), active_.end(), [](const auto& a) { return a && a->answering; });
    size_t first = active_.size();
    for (size_t s = 0; s < active_.size(); ++s)
      if (active_[s] && !active_[s]->answering &&
          (first == active_.size() || active_[s]->order < active_[first]->order))
        first = s;
    if (first < active_.size())
      prefill_step(first, answering ? options_.interleaved_chunk : model_.max_chunk());
    decode_step();
    std::lock_guard lock(mutex_);
    if (stats_.active == 0 && queue_.empty()) idle_.notify_all();
  }
  for (size_t s = 0; s < active_.size(); ++s)
    if (active_[s]) finish(s, "the server is shutting down");
  std::lock_guard lock(mutex_);
  for (auto& job : queue_) job->finish({}, "the server is shutting down");
  queue_.clear();
}

void Engine::admit() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard lock(mutex_);
      const bool free_slot = std::any_of(active_.begin(), active_.end(), [](const auto& a) { return !a; });
      if (queue_.empty() || !free_slot) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      stats_.queued = static_cast<int64_t>(queue_.size());
      ++stats_.jobs;
      ++stats_.active;  // counted from here, so that drain() never sees a job in neither place
    }
    const auto drop = [&](const GenerateStats& stats, std::string error) {
      job->finish(stats, std::move(error));
      std::lock_guard lock(mutex_);
      --stats_.active;
    };
    if (job->cancelled()) {
      GenerateStats s;
      s.stop = StopReason::kCancelled;
      drop(s, {});
      continue;
    }
    try {
      auto a = std::make_unique<Active>();
      a->job = job;
      a->order = ++admitted_;
      a->prompt = generator_.prepare(job->prompt_tokens_, prompt_parts(job->images_));
      a->sampler =
          std::make_unique<Sampler>(job->sampling_, static_cast<int32_t>(model_.shape().vocab_size));
      a->completion = std::make_unique<Completion>(tokenizer_, *a->sampler, job->options_);
      const size_t s = pick_slot(a->prompt);
      a->prefill = generator_.begin(slots_[s], a->prompt, &a->completion->stats());
      active_[s] = std::move(a);
    } catch (const std::exception& e) {
      drop({}, e.what());
    }
  }
}

size_t Engine::pick_slot(const Prompt& prompt) const {
  size_t best = slots_.size();
  int64_t best_keep = -1;
  for (size_t s = 0; s < slots_.size(); ++s) {
    if (active_[s]) continue;
    const int64_t keep = generator_.reusable(slots_[s], prompt);
    if (keep > best_keep || (keep == best_keep && last_used_[s] < last_used_[best])) {
      best = s;
      best_keep = keep;
    }
  }
  return best;
}

void Engine::prefill_step(size_t s, int64_t max_tokens) {
  Active& a = *active_[s];
  const auto start = Clock::now();
  try {
    const bool done =
        generator_.advance(slots_[s], a.prefill, max_tokens, logits_.data() + s * model_.shape().vocab_size);
    const double seconds = seconds_since(start);
    a.completion->stats().prompt_seconds += seconds;
    {
      std::lock_guard lock(mutex_);
      stats_.prefill_seconds += seconds;
    }
    if (!done) return;
    a.answering = true;
    take(s, std::span(logits_).subspan(s * model_.shape().vocab_size, model_.shape().vocab_size));
  } catch (const std::exception& e) {
    finish(s, e.what());
  }
}

void Engine::decode_step() {
  batch_slots_.clear();
  batch_tokens_.clear();
  batch_index_.clear();
  for (size_t s = 0; s < active_.size(); ++s)
    if (active_[s] && active_[s]->next) {
      batch_slots_.push_back(&slots_[s]);
      batch_tokens_.push_back(*active_[s]->next);
      batch_index_.push_back(s);
    }
  if (batch_slots_.empty()) return;
  const auto start = Clock::now();
  const int64_t vocab = model_.shape().vocab_size;
  try {
    generator_.decode(batch_slots_, batch_tokens_, logits_.data());
  } catch (const std::exception& e) {
    for (size_t s : batch_index_) finish(s, e.what());
    return;
  }
  const double seconds = seconds_since(start);
  {
    std::lock_guard lock(mutex_);
    stats_.decode_seconds += seconds;
    ++stats_.decode_steps;
    stats_.decode_rows += static_cast<int64_t>(batch_index_.size());
  }
  for (size_t i = 0; i < batch_index_.size(); ++i) {
    const size_t s = batch_index_[i];
    active_[s]->completion->stats().decode_seconds += seconds;
    take(s, std::span(logits_).subspan(i * vocab, vocab));
  }
}

void Engine::take(size_t s, std::span<float> logits) {
  Active& a = *active_[s];
  Job& job = *a.job;
  a.next = a.completion->next(logits, slots_[s], [&job](std::string_view text) {
    job.emit(text);
    return !job.cancelled();
  });
  last_used_[s] = ++step_;
  if (!a.next) finish(s);
}

void Engine::finish(size_t s, std::string error) {
  Active& a = *active_[s];
  const GenerateStats stats = a.completion->stats();
  if (!error.empty()) {
    // A step that failed may have left the cache half-written: the slot starts afresh.
    slots_[s].tokens.clear();
    slots_[s].image_digests.clear();
    slots_[s].boundaries.clear();
  }
  {
    std::lock_guard lock(mutex_);
    stats_.prompt_tokens += stats.prompt_tokens;
    stats_.reused_tokens += stats.reused_tokens;
    stats_.generated_tokens += stats.generated_tokens;
    --stats_.active;
  }
  a.job->finish(stats, std::move(error));
  active_[s].reset();
  last_used_[s] = ++step_;
}

}  // namespace ge::runtime
