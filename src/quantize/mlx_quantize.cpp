// The quantize driver: plans what becomes of every input tensor (quantized or copied), groups the outputs
// into shards, then streams each shard through a SafetensorsWriter, and finally writes config.json and
// copies the tokenizer files, all inside OUT.tmp, which is renamed to OUT last.
#include "quantize/mlx_quantize.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "formats/atomic_output.h"
#include "formats/json_file.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "kernels/thread_pool.h"

namespace ge::quantize {
namespace {

namespace fs = std::filesystem;
using kernels::QuantMode;
using kernels::QuantParams;
using nlohmann::json;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

// Parts of multimodal checkpoints that are not the text model (old and new transformers layouts, Gemma 3
// and Gemma 3n): mlx-lm drops or never quantizes them, so they are copied as they are.
constexpr std::array<std::string_view, 10> kNonTextPrefixes = {
    "vision_tower.", "model.vision_tower.", "multi_modal_projector.", "model.multi_modal_projector.",
    "audio_tower.",  "model.audio_tower.",  "embed_vision.",          "model.embed_vision.",
    "embed_audio.",  "model.embed_audio.",
};

bool in_text_model(std::string_view name) {
  return std::none_of(kNonTextPrefixes.begin(), kNonTextPrefixes.end(),
                      [&](std::string_view p) { return name.starts_with(p); });
}

// In a text model every 2-D `.weight` is a Linear or an Embedding (norms are 1-D, convolutions live in
// the towers), so the name and shape decide without knowing the model.
bool is_matrix_weight(const Tensor& t) {
  return ends_with(t.name, ".weight") && t.shape.size() == 2 && is_float(t.dtype) && in_text_model(t.name);
}

bool is_embedding(std::string_view name) {
  return name == "embed_tokens.weight" || ends_with(name, ".embed_tokens.weight");
}

// The module path mlx-lm keys per-layer config entries by: the tensor name without ".weight".
std::string module_path(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string_view(".weight").size());
}

json params_json(const QuantParams& p) {
  return {{"group_size", p.group_size},
          {"bits", p.bits},
          {"mode", std::string(kernels::quant_mode_name(p.mode))}};
}

// ---- The plan ----

// One input tensor and what becomes of it.
struct Job {
  const Tensor* in = nullptr;
  std::optional<QuantParams> quant;  // nullopt: copied unchanged
  uint64_t out_bytes = 0;
};

struct OutputTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

DType scale_dtype(const Job& job) {
  return kernels::has_biases(*job.quant) ? job.in->dtype : DType::U8;
}

// `X.weight` -> `X.weight` (codes), `X.scales`, and for affine `X.biases`, in that (data) order.
std::vector<OutputTensor> outputs_of(const Job& job) {
  const Tensor& t = *job.in;
  if (!job.quant) return {{t.name, t.dtype, t.shape}};
  const QuantParams& p = *job.quant;
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const std::string base = module_path(t.name);
  std::vector<OutputTensor> out = {{t.name, DType::U32, {rows, cols * p.bits / 32}},
                                   {base + ".scales", scale_dtype(job), {rows, cols / p.group_size}}};
  if (kernels::has_biases(p))
    out.push_back({base + ".biases", scale_dtype(job), {rows, cols / p.group_size}});
  return out;
}

uint64_t output_bytes(const Job& job) {
  uint64_t n = 0;
  for (const OutputTensor& o : outputs_of(job)) {
    int64_t numel = 1;
    for (int64_t d : o.shape) numel *= d;
    n += *dtype_bytes(o.dtype, numel);
  }
  return n;
}

struct Plan {
  std::vector<Job> jobs;
  json overrides = json::object();  // module path -> false or a params dict, merged into both config dicts
};

std::optional<QuantParams> embedding_params(const QuantizeOptions& o) {
  if (o.keep_embedding) return std::nullopt;
  if (o.embedding_bits) return QuantParams{QuantMode::kAffine, *o.embedding_bits, o.params.group_size};
  return o.params;
}

Plan plan_tensors(const formats::SafetensorsCheckpoint& ckpt, const fs::path& in, const QuantizeOptions& o) {
  Plan plan;
  bool has_embedding = false;
  for (const Tensor* t : ckpt.all()) {
    Job job{t, std::nullopt, 0};
    if (is_matrix_weight(*t)) {
      const bool embedding = is_embedding(t->name);
      has_embedding |= embedding;
      const std::optional<QuantParams> p = embedding ? embedding_params(o) : o.params;
      // Like mlx-lm: a matrix whose rows are not whole groups stays float, and no config entry says so.
      if (p && t->shape[1] > 0 && t->shape[1] % p->group_size == 0) job.quant = p;
      if (embedding && o.keep_embedding) plan.overrides[module_path(t->name)] = false;
      if (embedding && o.embedding_bits && job.quant)
        plan.overrides[module_path(t->name)] = params_json(*job.quant);
    }
    job.out_bytes = output_bytes(job);
    plan.jobs.push_back(job);
  }
  if ((o.keep_embedding || o.embedding_bits) && !has_embedding)
    fail(in.string() + ": no embed_tokens.weight in the text model for " +
         (o.keep_embedding ? "--keep-embedding" : "--embedding-bits"));
  return plan;
}

// ---- Shards ----

struct Shard {
  std::string file;
  std::vector<size_t> jobs;  // indices into Plan::jobs
  uint64_t bytes = 0;
};

// mlx-lm's rule (make_shards): fill a shard until the next tensor would pass the limit. The outputs of one
// input tensor stay together, so that each shard's writer can stream codes and then scales of a tensor.
std::vector<Shard> make_shards(const Plan& plan, uint64_t limit) {
  std::vector<Shard> shards(1);
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    const uint64_t n = plan.jobs[i].out_bytes;
    if (!shards.back().jobs.empty() && shards.back().bytes + n > limit) shards.emplace_back();
    shards.back().jobs.push_back(i);
    shards.back().bytes += n;
  }
  char name[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    shards[i].file = shards.size() == 1 ? "model.safetensors" : name;
  }
  return shards;
}

// ---- Writing tensor data ----

constexpr size_t kChunkBytes = size_t{1} << 20;

void write_bytes(std::ostream& out, const std::byte* data, size_t n) {
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
}

// The bytes [begin, begin + n) of t, checked as they are read.
void require_finite_bytes(const Tensor& t, size_t begin, size_t n) {
  const size_t value_bytes = static_cast<size_t>(dtype_info(t.dtype).block_bytes);
  require_finite("", t.name, t.dtype, t.data + begin, n / value_bytes, begin / value_bytes);
}

void copy_tensor(const Tensor& t, std::ostream& out) {
  for (size_t begin = 0; begin < t.nbytes; begin += kChunkBytes) {
    const size_t n = std::min(kChunkBytes, t.nbytes - begin);
    require_finite_bytes(t, begin, n);
    write_bytes(out, t.data + begin, n);
    formats::release_pages(t.data + begin, n);
  }
}

// Quantizes a matrix row by row (rows spread over the pool, a batch of ~1 MB of codes at a time): the
// codes go straight to `out`, the scales and biases (1/group of the codes' size) are kept for the tensors
// that follow the codes in the file.
class MatrixQuantizer {
 public:
  explicit MatrixQuantizer(kernels::ThreadPool& pool) : pool_(pool) {}

  void write_codes(const Tensor& t, const QuantParams& p, DType scale_type, std::ostream& out) {
    const int64_t rows = t.shape[0];
    m_ = {&t, p, scale_type, static_cast<size_t>(t.shape[1] * p.bits / 8),
          static_cast<size_t>(t.shape[1] / p.group_size) * dtype_info(scale_type).block_bytes};
    scales_.assign(static_cast<size_t>(rows) * m_.scale_row, std::byte{0});
    biases_.assign(kernels::has_biases(p) ? scales_.size() : 0, std::byte{0});
    const int64_t batch =
        std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / std::max<size_t>(m_.code_row, 1)));
    codes_.resize(static_cast<size_t>(std::min(batch, rows)) * m_.code_row);
    for (int64_t first = 0; first < rows; first += batch) {
      const int64_t n = std::min(batch, rows - first);
      require_finite_bytes(t, static_cast<size_t>(first) * t.row_bytes(), static_cast<size_t>(n) * t.row_bytes());
      const int64_t per_task = (n + pool_.size() - 1) / pool_.size();
      pool_.run(pool_.size(), [&](int64_t task) {
        const int64_t begin = first + std::min(n, task * per_task),
                      end = first + std::min(n, (task + 1) * per_task);
        quantize_rows(first, begin, end);
      });
      write_bytes(out, codes_.data(), static_cast<size_t>(n) * m_.code_row);
      formats::release_pages(t.row(first), static_cast<size_t>(n) * t.row_bytes());
    }
  }
  void write_scales(std::ostream& out) const { write_bytes(out, scales_.data(), scales_.size()); }
  void write_biases(std::ostream& out) const { write_bytes(out, biases_.data(), biases_.size()); }

 private:
  struct Matrix {
    const Tensor* t = nullptr;
    QuantParams p;
    DType scale_type = DType::BF16;
    size_t code_row = 0, scale_row = 0;  // bytes per row
  };

  // Rows [begin, end) of the batch that starts at row `first`, each widened to f32 and quantized.
  void quantize_rows(int64_t first, int64_t begin, int64_t end) {
    const Tensor& t = *m_.t;
    const int64_t cols = t.shape[1];
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      const std::byte* src = t.row(r);
      for (int64_t j = 0; j < cols; ++j) row[static_cast<size_t>(j)] = kernels::load_float(src, t.dtype, j);
      const size_t at = static_cast<size_t>(r) * m_.scale_row;
      kernels::quantize_row(m_.p, row.data(), cols, m_.scale_type,
                            codes_.data() + static_cast<size_t>(r - first) * m_.code_row, scales_.data() + at,
                            biases_.empty() ? nullptr : biases_.data() + at);
    }
  }

  kernels::ThreadPool& pool_;
  Matrix m_;
  std::vector<std::byte> codes_, scales_, biases_;
};

// Streams one shard: output tensor i of the writer is part `part` of job `job`.
void write_shard(const Plan& plan, const Shard& shard, const fs::path& path, MatrixQuantizer& quantizer,
                 Progress& progress, const ProgressCallback& report) {
  formats::SafetensorsWriter w;
  w.set_metadata("format", "mlx");
  struct Part {
    size_t job;
    size_t part;
    size_t parts;
  };
  std::vector<Part> parts;
  for (size_t j : shard.jobs) {
    const std::vector<OutputTensor> outs = outputs_of(plan.jobs[j]);
    for (size_t k = 0; k < outs.size(); ++k) {
      w.add_tensor(outs[k].name, outs[k].dtype, outs[k].shape);
      parts.push_back({j, k, outs.size()});
    }
  }
  w.write(path, [&](size_t i, std::ostream& out) {
    const Part& part = parts[i];
    const Job& job = plan.jobs[part.job];
    if (!job.quant)
      copy_tensor(*job.in, out);
    else if (part.part == 0)
      quantizer.write_codes(*job.in, *job.quant, scale_dtype(job), out);
    else if (part.part == 1)
      quantizer.write_scales(out);
    else
      quantizer.write_biases(out);
    progress.bytes_done += w.tensor_nbytes(i);
    if (part.part + 1 < part.parts) return;
    ++progress.tensors_done;
    if (report) report(progress);
  });
}

void write_index(const std::vector<Shard>& shards, const Plan& plan, const fs::path& dir) {
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  uint64_t total = 0;
  for (const Shard& s : shards) {
    total += s.bytes;
    for (size_t j : s.jobs)
      for (const OutputTensor& o : outputs_of(plan.jobs[j])) index["weight_map"][o.name] = s.file;
  }
  index["metadata"]["total_size"] = total;
  formats::write_atomically(dir / "model.safetensors.index.json",
                            [&](std::ostream& out) { out << index.dump(4) << '\n'; });
}

// ---- config.json and the other files ----

json read_config(const fs::path& in) {
  const fs::path file = in / "config.json";
  if (!fs::is_regular_file(file)) fail(file.string() + ": not found (not a Hugging Face checkpoint folder?)");
  json config = formats::read_json_file(file);
  if (!config.is_object()) fail(file.string() + ": expected a JSON object");
  if (config.contains("quantization"))
    fail(file.string() + ": has a \"quantization\" entry: the checkpoint is already quantized");
  return config;
}

// mlx-lm writes the same dict under both keys ("quantization_config" for Hugging Face tooling).
void add_quantization(json& config, const QuantParams& p, const json& overrides) {
  json q = params_json(p);
  for (const auto& [path, value] : overrides.items()) q[path] = value;
  config["quantization"] = q;
  config["quantization_config"] = q;
}

// Weights of any format are not copied: the quantized safetensors replace them.
bool is_weights_file(const fs::path& file) {
  const std::string name = file.filename().string();
  constexpr std::array<std::string_view, 9> kWeightSuffixes = {
      ".safetensors", ".index.json", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack"};
  return std::any_of(kWeightSuffixes.begin(), kWeightSuffixes.end(),
                     [&](std::string_view s) { return ends_with(name, s); });
}

void copy_other_files(const fs::path& in, const fs::path& out) {
  for (const fs::directory_entry& e : fs::directory_iterator(in)) {
    const fs::path name = e.path().filename();
    if (!e.is_regular_file() || name == "config.json" || is_weights_file(name)) continue;
    fs::copy_file(e.path(), out / name);  // follows symlinks (Hugging Face cache snapshots are symlinks)
  }
}

// ---- Checks before anything is written ----

void check_options(const QuantizeOptions& o) {
  if (const std::string e = kernels::quant_params_error(o.params); !e.empty())
    fail("invalid quantization (" + kernels::describe(o.params) + "): " + e);
  if (o.shard_bytes == 0) fail("shard size must be positive");
  if (!o.embedding_bits) return;
  if (o.keep_embedding) fail("--keep-embedding and --embedding-bits exclude each other");
  if (o.params.mode != QuantMode::kAffine)
    fail("--embedding-bits applies to affine mode only, not " +
         std::string(kernels::quant_mode_name(o.params.mode)));
  const QuantParams e{QuantMode::kAffine, *o.embedding_bits, o.params.group_size};
  if (const std::string error = kernels::quant_params_error(e); !error.empty())
    fail("invalid --embedding-bits: " + error);
}

void check_not_quantized(const formats::SafetensorsCheckpoint& ckpt, const fs::path& in) {
  for (const Tensor* t : ckpt.all())
    if (ends_with(t->name, ".scales"))
      fail(in.string() + ": tensor '" + t->name + "': the checkpoint is already quantized");
}

// "out/" names the folder "out", whose temporary sibling is "out.tmp", not "out/.tmp".
fs::path folder_path(const fs::path& p) {
  fs::path n = p.lexically_normal();
  return n.has_filename() ? n : n.parent_path();
}

bool is_inside(const fs::path& inner, const fs::path& outer) {
  const fs::path a = fs::weakly_canonical(inner), b = fs::weakly_canonical(outer);
  auto [end, ignored] = std::mismatch(b.begin(), b.end(), a.begin(), a.end());
  return end == b.end();
}

void check_output(const fs::path& in, const fs::path& out, const fs::path& tmp, bool force) {
  if (is_inside(in, out)) fail(out.string() + ": the output folder would replace the input " + in.string());
  if (fs::exists(fs::symlink_status(out)) && !force)
    fail(out.string() + ": already exists (remove it or pass --force to replace it)");
  if (fs::exists(fs::symlink_status(tmp)) && !force)
    fail(tmp.string() + ": already exists, left by an interrupted run? (remove it or pass --force)");
}

}  // namespace

QuantizeResult quantize_checkpoint(const fs::path& in_arg, const fs::path& out_arg,
                                   const QuantizeOptions& options) {
  check_options(options);
  const fs::path in = folder_path(in_arg), out = folder_path(out_arg);
  const fs::path tmp = out.string() + ".tmp";
  if (!fs::is_directory(in)) fail(in.string() + ": not a directory");
  json config = read_config(in);
  const formats::SafetensorsCheckpoint ckpt(in, /*populate=*/false);
  check_not_quantized(ckpt, in);
  check_output(in, out, tmp, options.force);

  const Plan plan = plan_tensors(ckpt, in, options);
  const std::vector<Shard> shards = make_shards(plan, options.shard_bytes);
  QuantizeResult result;
  result.shards = shards.size();
  Progress progress;
  progress.tensors_total = plan.jobs.size();
  for (const Job& job : plan.jobs) {
    (job.quant ? result.quantized_tensors : result.copied_tensors) += 1;
    result.input_bytes += job.in->nbytes;
    progress.bytes_total += job.out_bytes;
  }
  result.output_bytes = progress.bytes_total;

  fs::remove_all(tmp);  // only reached with `force` when it exists
  const formats::RemovalOnSignal interrupted(tmp, formats::RemovalOnSignal::Target::kTree);
  try {
    if (!fs::create_directory(tmp)) fail(tmp.string() + ": cannot create the folder");
    kernels::ThreadPool pool(options.threads);
    MatrixQuantizer quantizer(pool);
    for (const Shard& shard : shards)
      write_shard(plan, shard, tmp / shard.file, quantizer, progress, options.progress);
    if (shards.size() > 1) write_index(shards, plan, tmp);
    add_quantization(config, options.params, plan.overrides);
    formats::write_atomically(tmp / "config.json", [&](std::ostream& o) { o << config.dump(4) << '\n'; });
    copy_other_files(in, tmp);
    if (options.force) fs::remove_all(out);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ignored;  // the original error is the one worth reporting
    fs::remove_all(tmp, ignored);
    throw;
  }
  return result;
}

}  // namespace ge::quantize
