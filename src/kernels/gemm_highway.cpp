// BLIS-style f32 GEMM for every Highway target (see kernels/gemm.h).
//
// Loops of one task, outermost first: its output columns in blocks of at most kMaxBlockCols; k in steps of
// at most kMaxKc, whose slice of B is packed (widened to f32, and transposed where w is [n, k]) into panels
// of kNR columns, [kc][kNR] each, zero-padded past n: a block of panels (<= 480 KiB) stays in L2; then the
// rows of x kMR at a time, whose kMR x kc slice (<= 9 KiB) stays in L1 while the microkernel runs it against
// every panel of the block. The microkernel keeps a kMR x kNR tile of y in 2 * kMR vector registers: per k,
// two aligned loads of B, kMR broadcasts of x and 2 * kMR FMAs (AVX2: 6 x 16, 12 accumulators of 16
// registers; AVX-512: 6 x 32).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm_highway.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// foreach_target must come first
#include <hwy/aligned_allocator.h>
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/gemm.h"
#include "tensor/dtype.h"

#ifndef GE_KERNELS_GEMM_HIGHWAY_ONCE
#define GE_KERNELS_GEMM_HIGHWAY_ONCE
namespace ge::kernels::detail {
// gemm()'s arguments, checked and in unsigned sizes: B[p, j] is w[j * w_stride + p] (k_major = false) or
// w[p * w_stride + j] (k_major = true).
struct GemmOperands {
  const float* x;
  size_t ldx, m;
  const std::byte* w;
  DType dtype;
  size_t w_stride;
  bool k_major;
  size_t k, n;
  float* y;
  size_t ldy;
  bool accumulate;
};
}  // namespace ge::kernels::detail
#endif

HWY_BEFORE_NAMESPACE();
namespace ge::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using detail::GemmOperands;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kLanes = hn::MaxLanes(DF());
constexpr size_t kMR = 6;           // rows of x per microkernel tile
constexpr size_t kNR = 2 * kLanes;  // columns of y per microkernel tile: one panel
// Zen 3 (512 KiB L2, 32 KiB L1d): a 384 x 320 f32 block of B is 480 KiB, a kMR x 384 slice of x 9 KiB.
// Against 256 x 256 blocks, 3-6% faster (fewer passes over y, fewer calls) though the block fills L2.
constexpr size_t kMaxKc = 384;
constexpr size_t kMaxBlockCols = std::max<size_t>(kNR, 320 / kNR * kNR);

constexpr size_t DivCeil(size_t a, size_t b) {
  return (a + b - 1) / b;
}

// The f32 value of one stored weight.
template <class T>
HWY_INLINE float ToF32(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return *p;
  } else {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return std::is_same_v<T, hwy::bfloat16_t> ? bf16_to_f32(bits) : f16_to_f32(bits);
  }
}

// Lanes(d) consecutive stored weights as f32.
template <class D, class T>
HWY_INLINE hn::Vec<D> LoadWidened(D d, const T* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(d, p);
  } else if constexpr (std::is_same_v<T, hwy::float16_t>) {
    return hn::PromoteTo(d, hn::LoadU(hn::Rebind<hwy::float16_t, D>(), p));
  } else {
    const hn::RebindToUnsigned<D> du;
    const auto bits = hn::LoadU(hn::Rebind<uint16_t, D>(), reinterpret_cast<const uint16_t*>(p));
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, bits)));
  }
}

// Packs B[p0 + p, col0 + j] for p < kc, j < cols from w = [k, n]: each panel row is a copy of kNR
// consecutive weights.
template <class T>
void PackKMajor(const T* HWY_RESTRICT w, size_t stride, size_t p0, size_t kc, size_t col0, size_t cols,
                float* HWY_RESTRICT packed) {
  const DF d;
  for (size_t q = 0; q * kNR < cols; ++q) {
    float* HWY_RESTRICT panel = packed + q * kc * kNR;
    const size_t valid = std::min(kNR, cols - q * kNR);
    const T* HWY_RESTRICT src = w + p0 * stride + col0 + q * kNR;
    for (size_t p = 0; p < kc; ++p, src += stride) {
      float* HWY_RESTRICT out = panel + p * kNR;
      if (valid == kNR) {
        hn::Store(LoadWidened(d, src), d, out);
        hn::Store(LoadWidened(d, src + kLanes), d, out + kLanes);
      } else {
        for (size_t j = 0; j < kNR; ++j) out[j] = j < valid ? ToF32(src + j) : 0.0f;
      }
    }
  }
}

#if HWY_TARGET != HWY_SCALAR
// out[r * kNR + j] = w[j * stride + r] for r, j < 4: a 4 x 4 block of w transposed in 128-bit vectors
// (every target but HWY_SCALAR has them).
template <class T>
HWY_INLINE void Transpose4x4(const T* HWY_RESTRICT w, size_t stride, float* HWY_RESTRICT out) {
  const hn::FixedTag<float, 4> d4;
  const hn::Repartition<uint64_t, decltype(d4)> d64;
  const auto v0 = LoadWidened(d4, w), v1 = LoadWidened(d4, w + stride);
  const auto v2 = LoadWidened(d4, w + 2 * stride), v3 = LoadWidened(d4, w + 3 * stride);
  // t01_lo = (w0[0], w1[0], w0[1], w1[1]), t01_hi the same for elements 2, 3; likewise rows 2, 3.
  const auto t01_lo = hn::BitCast(d64, hn::InterleaveLower(d4, v0, v1));
  const auto t23_lo = hn::BitCast(d64, hn::InterleaveLower(d4, v2, v3));
  const auto t01_hi = hn::BitCast(d64, hn::InterleaveUpper(d4, v0, v1));
  const auto t23_hi = hn::BitCast(d64, hn::InterleaveUpper(d4, v2, v3));
  hn::Store(hn::BitCast(d4, hn::InterleaveLower(d64, t01_lo, t23_lo)), d4, out);
  hn::Store(hn::BitCast(d4, hn::InterleaveUpper(d64, t01_lo, t23_lo)), d4, out + kNR);
  hn::Store(hn::BitCast(d4, hn::InterleaveLower(d64, t01_hi, t23_hi)), d4, out + 2 * kNR);
  hn::Store(hn::BitCast(d4, hn::InterleaveUpper(d64, t01_hi, t23_hi)), d4, out + 3 * kNR);
}
#endif

// The same from w = [n, k]: B's column j is w's row j. A whole panel is transposed 4 k at a time across
// all its kNR rows of w, so each row of the panel is written whole while its line is in L1; each row of
// w gives only kc weights per k step, too short a run for the hardware prefetcher, so the next panel's
// rows are prefetched meanwhile. The last, partial panel of a block goes one weight at a time.
template <class T>
void PackTransposed(const T* HWY_RESTRICT w, size_t stride, size_t p0, size_t kc, size_t col0, size_t cols,
                    float* HWY_RESTRICT packed) {
  for (size_t q = 0; q * kNR < cols; ++q) {
    float* HWY_RESTRICT panel = packed + q * kc * kNR;
    const T* HWY_RESTRICT rows = w + (col0 + q * kNR) * stride + p0;
    const size_t valid = std::min(kNR, cols - q * kNR);
    size_t p = 0;
#if HWY_TARGET != HWY_SCALAR
    if (valid == kNR) {
      const T* HWY_RESTRICT next = (q + 2) * kNR <= cols ? rows + kNR * stride : nullptr;
      for (; p + 4 <= kc; p += 4) {
        if (next != nullptr && p % (64 / sizeof(T)) == 0)
          for (size_t j = 0; j < kNR; ++j) hwy::Prefetch(next + j * stride + p);
        for (size_t j0 = 0; j0 < kNR; j0 += 4)
          Transpose4x4(rows + j0 * stride + p, stride, panel + p * kNR + j0);
      }
    }
#endif
    for (; p < kc; ++p)
      for (size_t j = 0; j < kNR; ++j) panel[p * kNR + j] = j < valid ? ToF32(rows + j * stride + p) : 0.0f;
  }
}

template <class T>
void PackTyped(const GemmOperands& o, size_t p0, size_t kc, size_t col0, size_t cols, float* packed) {
  const T* w = reinterpret_cast<const T*>(o.w);
  if (o.k_major)
    PackKMajor(w, o.w_stride, p0, kc, col0, cols, packed);
  else
    PackTransposed(w, o.w_stride, p0, kc, col0, cols, packed);
}

void Pack(const GemmOperands& o, size_t p0, size_t kc, size_t col0, size_t cols, float* packed) {
  switch (o.dtype) {
    case DType::F32:
      return PackTyped<float>(o, p0, kc, col0, cols, packed);
    case DType::F16:
      return PackTyped<hwy::float16_t>(o, p0, kc, col0, cols, packed);
    case DType::BF16:
      return PackTyped<hwy::bfloat16_t>(o, p0, kc, col0, cols, packed);
    default:
      HWY_ABORT("gemm: unchecked weight dtype");
  }
}

// y[i, j] (+)= sum_p a[i * lda + p] * panel[p * kNR + j] for i < MR, j < cols (<= kNR). The tile lives in
// 2 * MR accumulators (fully unrolled arrays of vectors, which the compiler keeps in registers).
template <size_t MR>
HWY_NOINLINE void MicroKernel(size_t kc, const float* HWY_RESTRICT a, size_t lda,
                              const float* HWY_RESTRICT panel, float* HWY_RESTRICT y, size_t ldy, size_t cols,
                              bool add) {
  const DF d;
  VF acc0[MR], acc1[MR];
  const float* HWY_RESTRICT rows[MR];
#pragma GCC unroll 16
  for (size_t i = 0; i < MR; ++i) {
    acc0[i] = hn::Zero(d);
    acc1[i] = hn::Zero(d);
    rows[i] = a + i * lda;
    // The tile of y was last touched a whole k step ago, and is in L3 at best: fetched during the loop,
    // its lines are there when the sums are added to it (3-5% on the 4096-row products).
    hwy::Prefetch(y + i * ldy);
    if constexpr (kNR > 16) hwy::Prefetch(y + i * ldy + std::min<size_t>(cols - 1, 16));
    hwy::Prefetch(y + i * ldy + cols - 1);
  }
#pragma GCC unroll 2
  for (size_t p = 0; p < kc; ++p) {
    const VF b0 = hn::Load(d, panel + p * kNR);
    const VF b1 = hn::Load(d, panel + p * kNR + kLanes);
#pragma GCC unroll 16
    for (size_t i = 0; i < MR; ++i) {
      const VF ai = hn::Set(d, rows[i][p]);
      acc0[i] = hn::MulAdd(ai, b0, acc0[i]);
      acc1[i] = hn::MulAdd(ai, b1, acc1[i]);
    }
  }
  if (cols == kNR) {
#pragma GCC unroll 16
    for (size_t i = 0; i < MR; ++i) {
      float* HWY_RESTRICT out = y + i * ldy;
      if (add) {
        acc0[i] = hn::Add(hn::LoadU(d, out), acc0[i]);
        acc1[i] = hn::Add(hn::LoadU(d, out + kLanes), acc1[i]);
      }
      hn::StoreU(acc0[i], d, out);
      hn::StoreU(acc1[i], d, out + kLanes);
    }
    return;
  }
  // The last panel's columns past n are padding: computed, never written. (Unrolled like every loop over
  // the accumulators: indexing them at run time would keep them in memory, stored on every k.)
  HWY_ALIGN float tile[kNR];
#pragma GCC unroll 16
  for (size_t i = 0; i < MR; ++i) {
    hn::Store(acc0[i], d, tile);
    hn::Store(acc1[i], d, tile + kLanes);
    float* HWY_RESTRICT out = y + i * ldy;
    for (size_t j = 0; j < cols; ++j) out[j] = add ? out[j] + tile[j] : tile[j];
  }
}

using MicroKernelFn = void (*)(size_t, const float*, size_t, const float*, float*, size_t, size_t, bool);

template <size_t... I>
constexpr std::array<MicroKernelFn, sizeof...(I)> MicroKernelTable(std::index_sequence<I...>) {
  return {&MicroKernel<I + 1>...};
}

// MicroKernel<MR> for MR in [1, kMR], indexed by MR - 1: the last rows of x make a partial tile.
constexpr auto kMicroKernels = MicroKernelTable(std::make_index_sequence<kMR>());

// This thread's packed panels: grown once to the largest block and reused, so a warm call allocates nothing.
float* PackBuffer(size_t floats) {
  thread_local hwy::AlignedFreeUniquePtr<float[]> buffer;
  thread_local size_t capacity = 0;
  if (capacity < floats) {
    buffer = hwy::AllocateAligned<float>(floats);
    capacity = floats;
  }
  return buffer.get();
}

// k in steps of equal size, none over kMaxKc.
size_t KcStep(size_t k) {
  return DivCeil(k, DivCeil(k, kMaxKc));
}

// y[rows, cols] for rows [row_begin, row_end) and columns [col_begin, col_end).
void GemmBlock(const GemmOperands& o, size_t row_begin, size_t row_end, size_t col_begin, size_t col_end) {
  const size_t kc_step = KcStep(o.k);
  const size_t blocks = DivCeil(col_end - col_begin, kMaxBlockCols);
  const size_t block_cols = DivCeil(DivCeil(col_end - col_begin, blocks), kNR) * kNR;
  float* packed = PackBuffer(block_cols * kc_step);
  for (size_t col0 = col_begin; col0 < col_end; col0 += block_cols) {
    const size_t cols = std::min(block_cols, col_end - col0);
    const size_t panels = DivCeil(cols, kNR);
    for (size_t p0 = 0; p0 < o.k; p0 += kc_step) {
      const size_t kc = std::min(kc_step, o.k - p0);
      Pack(o, p0, kc, col0, cols, packed);
      const bool add = o.accumulate || p0 > 0;
      for (size_t i = row_begin; i < row_end; i += kMR) {
        const MicroKernelFn kernel = kMicroKernels[std::min(kMR, row_end - i) - 1];
        const float* a = o.x + i * o.ldx + p0;
        float* y = o.y + i * o.ldy + col0;
        for (size_t q = 0; q < panels; ++q)
          kernel(kc, a, o.ldx, packed + q * kc * kNR, y + q * kNR, o.ldy, std::min(kNR, cols - q * kNR), add);
      }
    }
  }
}

void GemmSingle(const GemmOperands& o) {
  GemmBlock(o, 0, o.m, 0, o.n);
}

// Tasks of kMR-multiple rows x kNR-multiple columns. Splitting columns finer makes each task stream its
// rows of x once more; splitting rows makes each task pack its columns of B once more. The grid is the one
// of least estimated time (in cycles of one core: FMAs at two per cycle, ~0.7 cycle per packed weight,
// ~0.1 per activation streamed, ~2000 per task) among those of at least kTasksPerThread tasks per thread
// whose column blocks fit in L2. Several tasks per thread let threads slowed by other work (a shared
// machine) hand theirs over: with one task each, a 640 x 2048 product of 64 tokens ran ~20% slower.
void GemmThreaded(ThreadPool& pool, const GemmOperands& o) {
  constexpr size_t kTasksPerThread = 4;
  const size_t threads = static_cast<size_t>(pool.size());
  if (threads == 1) return GemmSingle(o);
  const size_t panels = DivCeil(o.n, kNR), row_tiles = DivCeil(o.m, kMR);
  const size_t min_col_tasks = DivCeil(panels, kMaxBlockCols / kNR);
  const size_t wanted_tasks = std::min(kTasksPerThread * threads, panels * row_tiles);
  double best_time = std::numeric_limits<double>::infinity();
  size_t best_panels = panels, best_tiles = row_tiles;
  for (size_t col_tasks = min_col_tasks; col_tasks <= std::min(panels, min_col_tasks + wanted_tasks);
       ++col_tasks) {
    for (size_t row_tasks = 1; row_tasks <= std::min(row_tiles, wanted_tasks); ++row_tasks) {
      const size_t task_panels = DivCeil(panels, col_tasks), task_tiles = DivCeil(row_tiles, row_tasks);
      const size_t tasks = DivCeil(panels, task_panels) * DivCeil(row_tiles, task_tiles);
      if (tasks < wanted_tasks) continue;
      const double cols = static_cast<double>(task_panels * kNR),
                   rows = static_cast<double>(task_tiles * kMR);
      const double k = static_cast<double>(o.k);
      const double task = rows * cols * k / (2 * kLanes) + 0.7 * cols * k + 0.1 * rows * k + 2000;
      const double time = static_cast<double>(DivCeil(tasks, threads)) * task;
      if (time < best_time) {
        best_time = time;
        best_panels = task_panels;
        best_tiles = task_tiles;
      }
    }
  }
  const size_t task_cols = best_panels * kNR, task_rows = best_tiles * kMR;
  const size_t col_tasks = DivCeil(o.n, task_cols), row_tasks = DivCeil(o.m, task_rows);
  if (col_tasks * row_tasks == 1) return GemmSingle(o);
  // Consecutive tasks share rows of x (threads working side by side read them from the same L3 lines).
  pool.run(static_cast<int64_t>(col_tasks * row_tasks), [&](int64_t task) {
    const size_t r = static_cast<size_t>(task) / col_tasks, c = static_cast<size_t>(task) % col_tasks;
    GemmBlock(o, r * task_rows, std::min(o.m, (r + 1) * task_rows), c * task_cols,
              std::min(o.n, (c + 1) * task_cols));
  });
}

}  // namespace ge::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ge::kernels {
HWY_EXPORT(GemmSingle);
HWY_EXPORT(GemmThreaded);

namespace {

detail::GemmOperands check_operands(const float* x, int64_t ldx, int64_t m, const MatrixView& w,
                                    bool w_k_major, float* y, int64_t ldy, bool accumulate) {
  if (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16)
    throw std::invalid_argument("gemm: unsupported weight dtype " + std::string(dtype_info(w.dtype).name) +
                                " (F32, F16 or BF16)");
  const int64_t k = w_k_major ? w.rows : w.cols, n = w_k_major ? w.cols : w.rows;
  if (m < 0 || w.rows < 0 || w.cols < 0 || w.stride < w.cols || ldx < k || ldy < n)
    throw std::invalid_argument("gemm: bad shape or stride: m=" + std::to_string(m) +
                                " k=" + std::to_string(k) + " n=" + std::to_string(n) +
                                " ldx=" + std::to_string(ldx) + " ldy=" + std::to_string(ldy) +
                                " w.stride=" + std::to_string(w.stride));
  return {x,
          static_cast<size_t>(ldx),
          static_cast<size_t>(m),
          static_cast<const std::byte*>(w.data),
          w.dtype,
          static_cast<size_t>(w.stride),
          w_k_major,
          static_cast<size_t>(k),
          static_cast<size_t>(n),
          y,
          static_cast<size_t>(ldy),
          accumulate};
}

// An empty sum: y = 0, or y unchanged when accumulating. True if there is nothing left to compute.
bool trivial(const detail::GemmOperands& o) {
  if (o.m == 0 || o.n == 0) return true;
  if (o.k > 0) return false;
  if (!o.accumulate)
    for (size_t i = 0; i < o.m; ++i) std::fill_n(o.y + i * o.ldy, o.n, 0.0f);
  return true;
}

}  // namespace

void gemm(const float* x, int64_t ldx, int64_t m, const MatrixView& w, bool w_k_major, float* y, int64_t ldy,
          bool accumulate) {
  const detail::GemmOperands o = check_operands(x, ldx, m, w, w_k_major, y, ldy, accumulate);
  if (!trivial(o)) HWY_DYNAMIC_DISPATCH(GemmSingle)(o);
}

void gemm(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const MatrixView& w, bool w_k_major,
          float* y, int64_t ldy, bool accumulate) {
  const detail::GemmOperands o = check_operands(x, ldx, m, w, w_k_major, y, ldy, accumulate);
  if (!trivial(o)) HWY_DYNAMIC_DISPATCH(GemmThreaded)(pool, o);
}

}  // namespace ge::kernels
#endif  // HWY_ONCE
