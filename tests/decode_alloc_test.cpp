// "Nothing allocates per token in the decode loop": counts heap allocations made by the calling thread
// during decode steps of the demo model (after a warm-up step that may size scratch buffers).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "loader/model_loader.h"
#include "runtime/sampler.h"
#include "test_util.h"

namespace {
thread_local bool counting = false;
std::atomic<int64_t> allocations{0};
}  // namespace

// Replaces the global allocator for this test binary (every form that pairs with free: under AddressSanitizer,
// which replaces them too, a form left out would be ASan's and mismatch); it only counts while `counting` is set.
void* operator new(size_t n) {
  if (counting) allocations.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  if (counting) allocations.fetch_add(1);
  return std::malloc(n ? n : 1);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace ge {
namespace {

TEST(DecodeLoop, StepsAndSamplingDoNotAllocate) {
  auto m = loader::load_model(test::demo_model_dir(), 16);
  kernels::ThreadPool pool(2);
  auto cache = m.model->make_cache(64);
  std::vector<float> logits(m.model->shape().vocab_size);
  runtime::SamplingParams params;
  params.top_k = 40;
  params.top_p = 0.9f;
  params.repeat_penalty = 1.1f;
  runtime::Sampler sampler(params, static_cast<int32_t>(logits.size()));
  std::vector<int32_t> history = {2};
  history.reserve(64);
  const auto step = [&](int64_t pos) {
    m.model->forward(std::span(history).subspan(pos, 1), pos, cache, pool, logits.data(), false);
    history.push_back(sampler.sample(logits, history));
  };
  step(0);  // warm-up
  counting = true;
  for (int64_t pos = 1; pos < 40; ++pos) step(pos);
  counting = false;
  EXPECT_EQ(allocations.load(), 0);
}

}  // namespace
}  // namespace ge
