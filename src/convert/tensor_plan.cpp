// The tensor plan and its writer: every tensor is converted through f32 in chunks of kChunkElems, so the
// peak memory is two small buffers whatever the model's size.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "convert/conversion.h"
#include "formats/mapped_file.h"
#include "kernels/cpu_features.h"
#include "kernels/mlx_quant.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"

namespace ge::convert {
namespace {

namespace fs = std::filesystem;

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

int64_t elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void widen(DType t, const std::byte* src, size_t n, float* out) {
  if (t == DType::F32) {
    std::memcpy(out, src, n * 4);
  } else if (t == DType::BF16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(out + i, &bits, 4);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = f16_to_f32(h);
    }
  }
}

#if defined(__x86_64__)
// F16C rounds to nearest even, as the scalar f32_to_f16 does, ~10x faster than the software conversion
// a build without -march gets.
__attribute__((target("avx2,f16c"))) void narrow_f16_f16c(const float* in, size_t n, uint16_t* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) out[i] = f32_to_f16(in[i]);
}
#endif

// Block quantization is the slow part of a quantized conversion (the K types' scale searches: under 10M
// values/s per core), so it is spread over the pool in runs of whole blocks.
void quantize(DType t, const float* in, size_t n, std::byte* dst, kernels::ThreadPool* pool) {
  constexpr size_t kTaskValues = 8192;  // a multiple of every block size
  static_assert(kTaskValues % kernels::kSuperBlock == 0);
  const size_t tasks = (n + kTaskValues - 1) / kTaskValues;
  if (!pool || tasks <= 1) return kernels::quantize_blocks(t, in, static_cast<int64_t>(n), dst);
  const DTypeInfo& info = dtype_info(t);
  pool->run(static_cast<int64_t>(tasks), [&](int64_t task) {
    const size_t begin = static_cast<size_t>(task) * kTaskValues, count = std::min(kTaskValues, n - begin);
    kernels::quantize_blocks(t, in + begin, static_cast<int64_t>(count),
                             dst + begin / static_cast<size_t>(info.block_elems) * info.block_bytes);
  });
}

// n is a whole number of blocks for the block types: the writer's chunks are multiples of 256 elements
// (or a tensor's tail, itself whole rows), and only rows of whole blocks get a block type (type_for,
// mix_type).
void narrow(DType t, const float* in, size_t n, std::byte* dst, kernels::ThreadPool* pool) {
  if (t == DType::F32) {
    std::memcpy(dst, in, n * 4);
    return;
  }
  if (kernels::can_quantize(t)) return quantize(t, in, n, dst, pool);
  auto* out = reinterpret_cast<uint16_t*>(dst);  // the buffer is a std::vector, suitably aligned
  if (t == DType::BF16) {
    for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
    return;
  }
#if defined(__x86_64__)
  static const bool f16c = kernels::cpu_has_f16c() && __builtin_cpu_supports("avx2");
  if (f16c) return narrow_f16_f16c(in, n, out);
#endif
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

constexpr size_t kChunkElems = size_t{1} << 20;
static_assert(kChunkElems % kernels::kSuperBlock == 0, "chunks of whole blocks of every block type");

void shift_and_clip(const PlannedTensor& t, std::vector<float>& floats) {
  if (t.add != 0)
    for (float& f : floats) f += t.add;
  if (t.clip)
    for (float& f : floats) f = std::clamp(f, -*t.clip, *t.clip);
}

// Writes `floats` (source values) as t.out, after t's shift and clip.
void write_floats(const PlannedTensor& t, std::vector<float>& floats, std::ostream& out, WriteBuffers& b) {
  shift_and_clip(t, floats);
  const size_t out_bytes = *dtype_bytes(t.out, static_cast<int64_t>(floats.size()));
  b.bytes.resize(out_bytes);
  narrow(t.out, floats.data(), floats.size(), b.bytes.data(), b.pool);
  out.write(reinterpret_cast<const char*>(b.bytes.data()), static_cast<std::streamsize>(out_bytes));
}

// `count` source values starting at `src` (nullptr: zeros, for padding rows).
void write_chunk(const PlannedTensor& t, DType in, const std::byte* src, size_t count, std::ostream& out,
                 WriteBuffers& b) {
  const size_t in_size = dtype_info(in).block_bytes;
  if (src && in == t.out && t.add == 0 && !t.clip) {
    out.write(reinterpret_cast<const char*>(src), static_cast<std::streamsize>(count * in_size));
    return;
  }
  b.floats.resize(count);
  if (src)
    widen(in, src, count, b.floats.data());
  else
    std::fill(b.floats.begin(), b.floats.end(), 0.0f);
  write_floats(t, b.floats, out, b);
}

// Rows [0, rows) of an MLX-quantized matrix, dequantized about kChunkElems values at a time (whole rows,
// so a block type's chunks are whole blocks).
void write_quantized_rows(const PlannedTensor& t, const SourceTensors& sources, const Tensor& part,
                          const kernels::QuantizedMatrix& m, int64_t rows, std::ostream& out, WriteBuffers& b) {
  const int64_t chunk_rows = std::max<int64_t>(1, static_cast<int64_t>(kChunkElems) / m.cols);
  for (int64_t begin = 0; begin < rows; begin += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - begin);
    b.floats.resize(static_cast<size_t>(n * m.cols));
    for (int64_t r = 0; r < n; ++r) kernels::dequantize_row(m, begin + r, b.floats.data() + r * m.cols);
    require_finite(sources.describe(), part.name, DType::F32, reinterpret_cast<const std::byte*>(b.floats.data()),
                   b.floats.size(), static_cast<size_t>(begin * m.cols));
    write_floats(t, b.floats, out, b);
  }
}

}  // namespace

void fail(const std::string& what) {
  throw std::runtime_error(what);
}

DType dtype_of(OutType t) {
  switch (t) {
    case OutType::F32:
      return DType::F32;
    case OutType::F16:
      return DType::F16;
    case OutType::BF16:
      return DType::BF16;
    case OutType::Q8_0:
      return DType::Q8_0;
    case OutType::Q4_0:
      return DType::Q4_0;
    case OutType::Q4_K_M:
    case OutType::Q5_K_M:
    case OutType::Q6_K:
      return DType::F16;
  }
  return DType::F32;
}

const Tensor& TensorPlan::get(const std::string& name, const std::vector<int64_t>& shape) {
  const Tensor* t = find(name);
  const std::string dir = ckpt_.dir.string();
  if (!t) fail(dir + ": tensor '" + name + "' is missing from the checkpoint");
  if (!is_float(t->dtype))
    fail(dir + ": tensor '" + name + "' has dtype " + std::string(dtype_info(t->dtype).name) +
         "; only F32, F16 and BF16 checkpoints are supported");
  if (t->shape != shape)
    fail(dir + ": tensor '" + name + "' has shape " + shape_string(t->shape) + ", config.json implies " +
         shape_string(shape));
  used_.insert(name);
  return *t;
}

DType TensorPlan::type_for(const std::vector<int64_t>& shape) const {
  if (shape.size() <= 1) return DType::F32;
  // Block types need whole blocks per row; llama.cpp's converter falls back to f16 for a matrix that
  // cannot be quantized, and so do we.
  return shape.back() % dtype_info(matrix_type_).block_elems == 0 ? matrix_type_ : DType::F16;
}

PlannedTensor& TensorPlan::add(std::string gguf_name, const std::string& src_name,
                               const std::vector<int64_t>& shape) {
  const Tensor& t = get(src_name, shape);
  return add(PlannedTensor{std::move(gguf_name), {&t}, type_for(shape), shape});
}

PlannedTensor& TensorPlan::add(PlannedTensor t) {
  tensors_.push_back(std::move(t));
  return tensors_.back();
}

std::string text_model_prefix(const Checkpoint& ckpt) {
  return ckpt.tensors.find("model.language_model.embed_tokens.weight") ? "model.language_model." : "model.";
}

bool is_multimodal_tower_tensor(std::string_view name) {
  for (std::string_view p :
       {"model.audio_tower.", "model.vision_tower.", "model.embed_audio.", "model.embed_vision."})
    if (name.starts_with(p)) return true;
  return false;
}

void plan_mlp(int64_t hidden, int64_t ff, const std::string& src, const std::string& dst, TensorPlan& plan) {
  plan.add(dst + "ffn_norm.weight", src + "pre_feedforward_layernorm.weight", {hidden});
  plan.add(dst + "ffn_gate.weight", src + "mlp.gate_proj.weight", {ff, hidden});
  plan.add(dst + "ffn_up.weight", src + "mlp.up_proj.weight", {ff, hidden});
  plan.add(dst + "ffn_down.weight", src + "mlp.down_proj.weight", {hidden, ff});
  plan.add(dst + "post_ffw_norm.weight", src + "post_feedforward_layernorm.weight", {hidden});
}

void write_planned_tensor(const PlannedTensor& t, const SourceTensors& sources, std::ostream& out,
                          WriteBuffers& buffers) {
  if (!t.values.empty()) {
    buffers.floats = t.values;
    return write_floats(t, buffers.floats, out, buffers);
  }
  size_t remaining = static_cast<size_t>(elements(t.shape));
  for (const Tensor* part : t.parts) {
    const DType in = part->dtype;
    const size_t in_size = dtype_info(in).block_bytes;
    const size_t n = std::min(remaining, static_cast<size_t>(elements(part->shape)));
    if (const kernels::QuantizedMatrix* m = sources.quantized(*part)) {
      write_quantized_rows(t, sources, *part, *m, static_cast<int64_t>(n) / m->cols, out, buffers);
      remaining -= n;
      continue;
    }
    for (size_t begin = 0; begin < n; begin += kChunkElems) {
      const size_t count = std::min(kChunkElems, n - begin);
      const std::byte* src = part->data + begin * in_size;
      require_finite(sources.describe(), part->name, in, src, count, begin);
      write_chunk(t, in, src, count, out, buffers);
      formats::release_pages(src, count * in_size);
    }
    remaining -= n;
  }
  for (size_t done = 0; done < remaining; done += kChunkElems)
    write_chunk(t, DType::F32, nullptr, std::min(kChunkElems, remaining - done), out, buffers);
}

}  // namespace ge::convert
