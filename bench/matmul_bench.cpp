// Throughput of the matmul paths on the shapes Gemma 3 uses, and of the memory system beneath them.
//   decode (n_tokens = 1): GB/s of weights streamed, against measured read bandwidth;
//   prefill (n_tokens = 64, 256): GFLOP/s (2 * rows * cols * n_tokens per call);
//   few tokens (n_tokens = 4 .. 16, weights streamed): GFLOP/s.
//   gemm (BM_Gemm): GFLOP/s of gemm() on the vision tower's shapes.
// "fma" is the exact f32-FMA path on bf16 weights (matmul_highway), "exact" matmul() itself (gemm() from
// detail::min_gemm_tokens tokens on), "gemm" gemm() at every token count ("_f32": on f32 weights);
// "fma_q8_0" / "fma_q4_0" the fma path on ggml's block formats (decode GB/s count the quantized bytes:
// 34 / 18 per 32 weights against bf16's 64);
// "bf16_activations" is matmul() with Precision::kReducedActivations on bf16 weights, "reduced_q8_0" /
// "reduced_q4_0" the same on Q8_0 / Q4_0 weights (the vpdpbusd kernel, activations quantized to 8-bit
// blocks).
// Environment: GE_BENCH_THREADS (default: all cores); GE_BENCH_HWY_TARGET=AVX2 (or SSE4, ...) runs the fma
// path on that Highway target instead of the best one, e.g. to see what an AVX2-only CPU would get.
#include <benchmark/benchmark.h>
#include <hwy/targets.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"
#include "tensor/dtype.h"

namespace ge::kernels {
namespace {

ThreadPool& bench_pool() {
  static ThreadPool pool(std::getenv("GE_BENCH_THREADS") ? std::atoi(std::getenv("GE_BENCH_THREADS")) : 0);
  return pool;
}

// One matrix of random weights in (-1, 1), stored as dtype (F32, BF16, Q8_0 or Q4_0).
std::vector<std::byte> random_weight_bytes(DType dtype, int64_t rows, int64_t cols) {
  // A cheap xorshift generator keeps the setup of large matrices short.
  uint32_t state = 42;
  std::vector<float> row(static_cast<size_t>(cols));
  const size_t row_bytes = *dtype_bytes(dtype, cols);
  std::vector<std::byte> bytes(static_cast<size_t>(rows) * row_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      v = static_cast<float>(static_cast<int32_t>(state)) * 0x1p-31f;
    }
    std::byte* out = bytes.data() + static_cast<size_t>(r) * row_bytes;
    switch (dtype) {
      case DType::F32:
        std::memcpy(out, row.data(), row_bytes);
        break;
      case DType::BF16:
        for (int64_t i = 0; i < cols; ++i) {
          const uint16_t bits = f32_to_bf16(row[i]);
          std::memcpy(out + i * 2, &bits, 2);
        }
        break;
      case DType::Q8_0:
        quantize_row_q8_0(row.data(), cols, out);
        break;
      case DType::Q4_0:
        quantize_row_q4_0(row.data(), cols, out);
        break;
      default:
        std::abort();
    }
  }
  return bytes;
}

// Enough copies of a weight matrix that together they overflow the last-level cache, as a model's
// layers do: cycling through them makes each call stream its weights from DRAM.
class BenchWeights {
 public:
  BenchWeights(DType dtype, int64_t rows, int64_t cols, size_t min_total_bytes) {
    const std::vector<std::byte> one = random_weight_bytes(dtype, rows, cols);
    const size_t copies = std::max<size_t>(1, (min_total_bytes + one.size() - 1) / one.size());
    storage_.resize(copies * one.size());
    for (size_t c = 0; c < copies; ++c) {
      std::byte* data = storage_.data() + c * one.size();
      std::memcpy(data, one.data(), one.size());
      tensors_.push_back(Tensor{"w", dtype, {rows, cols}, data, one.size()});
    }
  }
  const Tensor& next() { return tensors_[next_++ % tensors_.size()]; }
  size_t bytes() const { return tensors_[0].nbytes; }

 private:
  std::vector<std::byte> storage_;
  std::vector<Tensor> tensors_;
  size_t next_ = 0;
};

// Google Benchmark calls each benchmark function several times; build each weight set once.
BenchWeights& bench_weights(DType dtype, int64_t rows, int64_t cols, size_t min_total_bytes) {
  static std::map<std::tuple<DType, int64_t, int64_t, size_t>, std::unique_ptr<BenchWeights>> cache;
  auto& slot = cache[{dtype, rows, cols, min_total_bytes}];
  if (!slot) slot = std::make_unique<BenchWeights>(dtype, rows, cols, min_total_bytes);
  return *slot;
}

using Path = void (*)(ThreadPool&, const Tensor&, const float*, int64_t, float*);

void run_matmul(benchmark::State& state, Path path, DType dtype, int64_t rows, int64_t cols, int64_t n_tokens,
                size_t min_weight_bytes) {
  BenchWeights& weights = bench_weights(dtype, rows, cols, min_weight_bytes);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols), 0.5f), y(static_cast<size_t>(n_tokens * rows));
  ThreadPool& pool = bench_pool();
  for (auto _ : state) {
    path(pool, weights.next(), x.data(), n_tokens, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["threads"] = pool.size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * weights.bytes()));
  state.counters["FLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(rows * cols * n_tokens) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

constexpr size_t kOverflowCache = size_t{256} << 20;

void BM_Decode(benchmark::State& state, Path path, DType dtype) {
  run_matmul(state, path, dtype, state.range(0), state.range(1), 1, kOverflowCache);
}

// The same weights every call, small enough to stay in cache: the decode kernels' compute ceiling.
void BM_DecodeCached(benchmark::State& state, Path path, DType dtype) {
  run_matmul(state, path, dtype, state.range(0), state.range(1), 1, 0);
}

// Prefill is compute bound; its weights are reused across tokens, so one copy is realistic.
void BM_Prefill(benchmark::State& state, Path path, DType dtype) {
  run_matmul(state, path, dtype, state.range(0), state.range(1), state.range(2), 0);
}

void decode_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"})->Args({262144, 640})->Args({6912, 1152})->Args({1152, 6912});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// 64 and 256 rows of 640 stay in L2 (1 MiB per core here), 1024 rows in L3.
void cached_decode_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"})->Args({64, 640})->Args({256, 640})->Args({1024, 640});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// Gemma 3 1B (1152 wide) and 270M (640 wide) projections.
void prefill_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens"});
  for (int64_t tokens : {64, 256}) {
    b->Args({1024, 640, tokens})->Args({2048, 640, tokens})->Args({640, 2048, tokens});
    b->Args({6912, 1152, tokens})->Args({1152, 6912, tokens});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The public entry with Precision::kReducedActivations: the vdpbf16ps kernel where matmul() picks it (see the
// "avx512bf16" context), otherwise the fma path it falls back to.
void matmul_bf16_activations(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  matmul(pool, w, x, n_tokens, y, Precision::kReducedActivations);
}

// The same request on Q8_0 or Q4_0 weights: the vpdpbusd kernel where matmul() picks it (see the
// "avx512vnni" context), otherwise the exact fma path.
void matmul_reduced_quantized(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  matmul(pool, w, x, n_tokens, y, Precision::kReducedActivations);
}

// matmul() itself with Precision::kExact: gemm() from detail::min_gemm_tokens on, otherwise the fma path.
void matmul_exact(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  matmul(pool, w, x, n_tokens, y, Precision::kExact);
}

// gemm() on a Linear weight whatever the token count: against "fma" on crossover_shapes (bf16 and f32
// weights), where it starts to win decides detail::min_gemm_tokens.
void matmul_gemm(ThreadPool& pool, const Tensor& w, const float* x, int64_t n_tokens, float* y) {
  const MatrixView view{w.data, w.dtype, w.rows(), w.cols(), w.cols()};
  gemm(pool, x, w.cols(), n_tokens, view, /*w_k_major=*/false, y, w.rows());
}

void crossover_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens"});
  for (int64_t tokens : {8, 16, 32, 48, 64, 96})
    b->Args({1024, 640, tokens})->Args({2048, 640, tokens})->Args({640, 2048, tokens})
        ->Args({6912, 1152, tokens})->Args({1152, 6912, tokens});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// The tied LM head (262144 x 640) over a 64-token chunk, as run when every position's logits are wanted;
// only for the Q8_0 and Q4_0 paths, whose comparison it is.
void lm_head_prefill_shape(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens"})->Args({262144, 640, 64});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// Few tokens with weights streamed from DRAM, as in a short prompt: where the vdpbf16ps and vpdpbusd
// kernels start to beat the fma path, which decides detail::kMinBf16Tokens and kMinVnniTokens.
void BM_FewTokens(benchmark::State& state, Path path, DType dtype) {
  run_matmul(state, path, dtype, state.range(0), state.range(1), state.range(2), kOverflowCache);
}

void BM_FewTokensBf16Kernel(benchmark::State& state) {
  if (!detail::cpu_has_avx512bf16()) return state.SkipWithError("this CPU lacks AVX512_BF16");
  BM_FewTokens(state, &detail::matmul_avx512bf16, DType::BF16);
}

void BM_FewTokensVnniKernel(benchmark::State& state, DType dtype) {
  if (!detail::cpu_has_avx512vnni()) return state.SkipWithError("this CPU lacks AVX512-VNNI");
  BM_FewTokens(state, &detail::matmul_vnni, dtype);
}

void few_token_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens"});
  for (int64_t tokens : {4, 8, 16}) b->Args({6912, 1152, tokens})->Args({1152, 6912, tokens});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Decode, fma, &detail::matmul_highway, DType::BF16)->Apply(decode_shapes);
BENCHMARK_CAPTURE(BM_Decode, fma_q8_0, &detail::matmul_highway, DType::Q8_0)->Apply(decode_shapes);
BENCHMARK_CAPTURE(BM_Decode, fma_q4_0, &detail::matmul_highway, DType::Q4_0)->Apply(decode_shapes);
BENCHMARK_CAPTURE(BM_Decode, bf16_activations, &matmul_bf16_activations, DType::BF16)->Apply(decode_shapes);
BENCHMARK_CAPTURE(BM_DecodeCached, fma, &detail::matmul_highway, DType::BF16)->Apply(cached_decode_shapes);
BENCHMARK_CAPTURE(BM_DecodeCached, fma_q8_0, &detail::matmul_highway, DType::Q8_0)
    ->Apply(cached_decode_shapes);
BENCHMARK_CAPTURE(BM_DecodeCached, fma_q4_0, &detail::matmul_highway, DType::Q4_0)
    ->Apply(cached_decode_shapes);
BENCHMARK_CAPTURE(BM_Prefill, fma, &detail::matmul_highway, DType::BF16)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_Prefill, exact, &matmul_exact, DType::BF16)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_Prefill, fma, &detail::matmul_highway, DType::BF16)->Apply(crossover_shapes);
BENCHMARK_CAPTURE(BM_Prefill, gemm, &matmul_gemm, DType::BF16)->Apply(crossover_shapes);
BENCHMARK_CAPTURE(BM_Prefill, fma_f32, &detail::matmul_highway, DType::F32)->Apply(crossover_shapes);
BENCHMARK_CAPTURE(BM_Prefill, gemm_f32, &matmul_gemm, DType::F32)->Apply(crossover_shapes);
BENCHMARK_CAPTURE(BM_Prefill, fma_q8_0, &detail::matmul_highway, DType::Q8_0)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_Prefill, reduced_q8_0, &matmul_reduced_quantized, DType::Q8_0)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_Prefill, fma_q8_0, &detail::matmul_highway, DType::Q8_0)->Apply(lm_head_prefill_shape);
BENCHMARK_CAPTURE(BM_Prefill, reduced_q8_0, &matmul_reduced_quantized, DType::Q8_0)
    ->Apply(lm_head_prefill_shape);
BENCHMARK_CAPTURE(BM_Prefill, fma_q4_0, &detail::matmul_highway, DType::Q4_0)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_Prefill, reduced_q4_0, &matmul_reduced_quantized, DType::Q4_0)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_Prefill, fma_q4_0, &detail::matmul_highway, DType::Q4_0)->Apply(lm_head_prefill_shape);
BENCHMARK_CAPTURE(BM_Prefill, reduced_q4_0, &matmul_reduced_quantized, DType::Q4_0)
    ->Apply(lm_head_prefill_shape);
BENCHMARK_CAPTURE(BM_Prefill, bf16_activations, &matmul_bf16_activations, DType::BF16)->Apply(prefill_shapes);
BENCHMARK_CAPTURE(BM_FewTokens, fma, &detail::matmul_highway, DType::BF16)->Apply(few_token_shapes);
BENCHMARK(BM_FewTokensBf16Kernel)->Apply(few_token_shapes);
BENCHMARK_CAPTURE(BM_FewTokens, fma_q8_0, &detail::matmul_highway, DType::Q8_0)->Apply(few_token_shapes);
BENCHMARK_CAPTURE(BM_FewTokensVnniKernel, q8_0, DType::Q8_0)->Apply(few_token_shapes);
BENCHMARK_CAPTURE(BM_FewTokens, fma_q4_0, &detail::matmul_highway, DType::Q4_0)->Apply(few_token_shapes);
BENCHMARK_CAPTURE(BM_FewTokensVnniKernel, q4_0, DType::Q4_0)->Apply(few_token_shapes);

// The SigLIP vision tower's products as GEMMs, M = 4096 patches: y = x w^T with w [N, K] (the Linear
// layers; "dot_tiles" is the same product on the fma path of matmul_highway), and attention per head:
// S = Q K^T (M = 256 queries, N = 4096 keys, K = 72) and O = P V (N = 72, K = 4096, V k-major).
void BM_Gemm(benchmark::State& state, DType dtype) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool k_major = state.range(3) != 0;
  const int64_t rows = k_major ? k : n, cols = k_major ? n : k;
  const std::vector<std::byte> w_bytes = random_weight_bytes(dtype, rows, cols);
  const MatrixView w{w_bytes.data(), dtype, rows, cols, cols};
  std::vector<float> x(static_cast<size_t>(m * k), 0.5f), y(static_cast<size_t>(m * n));
  ThreadPool& pool = bench_pool();
  for (auto _ : state) {
    gemm(pool, x.data(), k, m, w, k_major, y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["threads"] = pool.size();
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(m * n * k) * state.iterations(),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BM_GemmDotTiles(benchmark::State& state, DType dtype) {
  if (state.range(3) != 0) return state.SkipWithError("matmul_highway takes w as [N, K] only");
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  run_matmul(state, &detail::matmul_highway, dtype, n, k, m, 0);
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "k_major"});
  b->Args({4096, 1152, 1152, 0})->Args({4096, 4304, 1152, 0})->Args({4096, 1152, 4304, 0});
  b->Args({256, 4096, 72, 0})->Args({256, 72, 4096, 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Gemm, f32, DType::F32)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_Gemm, bf16, DType::BF16)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_GemmDotTiles, f32, DType::F32)->Apply(gemm_shapes);

void BM_ReadBandwidth(benchmark::State& state) {
  double gbs = 0;
  for (auto _ : state) gbs = measure_read_bandwidth_gbs(bench_pool(), size_t{1} << 30);
  state.counters["GB/s"] = gbs;
}
BENCHMARK(BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);

// One parallel region of 2 tasks per thread, each busy for 1 us: the excess over 2 us is what a region
// costs (a decoded token pays it ~130 times).
void BM_PoolRegion(benchmark::State& state) {
  ThreadPool& pool = bench_pool();
  for (auto _ : state) {
    pool.run(2 * pool.size(), [](int64_t) {
      const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(1);
      while (std::chrono::steady_clock::now() < end) {
      }
    });
  }
}
BENCHMARK(BM_PoolRegion)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Narrows Highway's dispatch to the target named by GE_BENCH_HWY_TARGET, if any; false if unknown.
bool force_highway_target_from_env() {
  const char* wanted = std::getenv("GE_BENCH_HWY_TARGET");
  if (wanted == nullptr) return true;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (std::strcmp(hwy::TargetName(target), wanted) == 0) {
      hwy::SetSupportedTargetsForTest(target);
      return true;
    }
  }
  return false;
}

}  // namespace
}  // namespace ge::kernels

int main(int argc, char** argv) {
  if (!ge::kernels::force_highway_target_from_env()) {
    std::fprintf(stderr, "GE_BENCH_HWY_TARGET names no Highway target this CPU supports\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("matmul_target", ge::kernels::matmul_target());
  benchmark::AddCustomContext("highway_target", ge::kernels::detail::highway_target_name());
  benchmark::AddCustomContext("avx512bf16", ge::kernels::detail::cpu_has_avx512bf16() ? "yes" : "no");
  benchmark::AddCustomContext("avx512vnni", ge::kernels::detail::cpu_has_avx512vnni() ? "yes" : "no");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
