// The conversion driver: reads the checkpoint folder once, lets the family converter add metadata and plan
// tensors, then streams the planned tensors into the file (through a temporary name and a rename).
#include "convert/gguf_convert.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "convert/conversion.h"
#include "formats/json_file.h"
#include "kernels/thread_pool.h"

namespace ge::convert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_object(const fs::path& file) {
  json j = formats::read_json_file(file);
  if (!j.is_object()) fail(file.string() + ": expected a JSON object");
  return j;
}

std::string model_type(const Checkpoint& ckpt) {
  const json& t = ckpt.config.contains("model_type") ? ckpt.config["model_type"] : json();
  return t.is_string() ? t.get<std::string>() : "";
}

FamilyConverter text_converter(const Checkpoint& ckpt) {
  const std::string type = model_type(ckpt);
  if (type == "gemma" || type == "gemma2" || type == "gemma3_text" || type == "gemma3")
    return convert_gemma_text;
  if (type == "gemma3n") return convert_gemma3n;
  if (type == "gemma4" || type == "gemma4_text") return convert_gemma4;
  fail((ckpt.dir / "config.json").string() + ": model_type " +
       (type.empty() ? "(missing)" : "'" + type + "'") +
       " is not supported by gemma convert (supported: gemma, gemma2, gemma3_text, gemma3, gemma3n, gemma4, gemma4_text)");
}

FamilyConverter projector_converter(const Checkpoint& ckpt) {
  const std::string type = model_type(ckpt);
  if (type == "gemma3") return convert_gemma3_mmproj;
  fail((ckpt.dir / "config.json").string() + ": --mmproj: model_type '" + type +
       "' has no vision projector that gemma convert writes (supported: gemma3)");
}

// The checkpoint's own dtype: that of its largest tensor (bf16 for every published Gemma).
OutType checkpoint_out_type(const TensorSource& tensors) {
  const Tensor* largest = nullptr;
  for (const Tensor* t : tensors.all())
    if (!largest || t->numel() > largest->numel()) largest = t;
  if (largest && largest->dtype == DType::F32) return OutType::F32;
  if (largest && largest->dtype == DType::F16) return OutType::F16;
  return OutType::BF16;
}

using ChooseConverter = FamilyConverter (*)(const Checkpoint&);

ConvertResult run_conversion(const fs::path& dir, const fs::path& out_path, const ConvertOptions& options,
                             ChooseConverter choose) {
  if (!fs::is_directory(dir)) fail(dir.string() + ": not a directory");
  const fs::path config_file = dir / "config.json";
  if (!fs::is_regular_file(config_file))
    fail(config_file.string() + ": not found (not a Hugging Face checkpoint folder?)");
  const fs::path tc_file = dir / "tokenizer_config.json";
  const formats::SafetensorsCheckpoint file(dir, /*populate=*/false);
  const json config = read_object(config_file);
  const SourceTensors tensors(file, config, config_file.string());
  const Checkpoint ckpt{dir, config, fs::is_regular_file(tc_file) ? read_object(tc_file) : json::object(),
                        tensors};
  const FamilyConverter convert = choose(ckpt);

  ConvertResult result;
  result.out_type = options.out_type.value_or(checkpoint_out_type(tensors));
  formats::GgufWriter w;
  TensorPlan plan(ckpt, result.out_type);
  result.architecture = convert(ckpt, result.out_type, w, plan);
  // A mix types each tensor by its role, which needs the whole plan (layer count, a separate output).
  if (is_quant_mix(result.out_type)) assign_mix_types(result.out_type, plan);

  const std::vector<PlannedTensor>& planned = plan.tensors();
  result.tensor_count = planned.size();
  for (const PlannedTensor& t : planned)
    result.tensor_bytes += w.tensor_nbytes(w.add_tensor(t.name, t.out, t.shape));

  Progress progress;
  progress.tensors_total = planned.size();
  progress.bytes_total = result.tensor_bytes;
  // Threads only where a tensor is block-quantized: the float conversions are bound by reading the source.
  std::optional<kernels::ThreadPool> pool;
  if (std::any_of(planned.begin(), planned.end(),
                  [](const PlannedTensor& t) { return is_ggml_block(t.out); }))
    pool.emplace(options.threads);
  WriteBuffers buffers;
  buffers.pool = pool ? &*pool : nullptr;
  w.write(out_path, [&](size_t i, std::ostream& out) {
    write_planned_tensor(planned[i], tensors, out, buffers);
    progress.tensors_done = i + 1;
    progress.bytes_done += w.tensor_nbytes(i);
    if (options.progress) options.progress(progress);
  });
  return result;
}

}  // namespace

// ggml file type ids (llama_ftype).
uint32_t file_type_id(OutType t) {
  switch (t) {
    case OutType::F32:
      return 0;  // ALL_F32
    case OutType::F16:
      return 1;  // MOSTLY_F16
    case OutType::BF16:
      return 32;  // MOSTLY_BF16
    case OutType::Q8_0:
      return 7;  // MOSTLY_Q8_0
    case OutType::Q4_0:
      return 2;  // MOSTLY_Q4_0
    case OutType::Q4_K_M:
      return 15;  // MOSTLY_Q4_K_M
    case OutType::Q5_K_M:
      return 17;  // MOSTLY_Q5_K_M
    case OutType::Q6_K:
      return 18;  // MOSTLY_Q6_K
  }
  return 0;
}

void add_general(formats::GgufWriter& w, const std::string& arch, const fs::path& dir,
                 const std::string& type) {
  fs::path p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  w.add("general.architecture", arch);
  w.add("general.type", type);
  w.add("general.name", p.filename().string());
}

constexpr OutType kOutTypes[] = {OutType::F32,  OutType::F16,    OutType::BF16,   OutType::Q8_0,
                                 OutType::Q4_0, OutType::Q4_K_M, OutType::Q5_K_M, OutType::Q6_K};

std::optional<OutType> parse_out_type(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (OutType t : kOutTypes)
    if (lower == out_type_name(t)) return t;
  return std::nullopt;
}

std::string_view out_type_name(OutType t) {
  switch (t) {
    case OutType::F32:
      return "f32";
    case OutType::F16:
      return "f16";
    case OutType::BF16:
      return "bf16";
    case OutType::Q8_0:
      return "q8_0";
    case OutType::Q4_0:
      return "q4_0";
    case OutType::Q4_K_M:
      return "q4_k_m";
    case OutType::Q5_K_M:
      return "q5_k_m";
    case OutType::Q6_K:
      return "q6_k";
  }
  return "?";
}

std::string out_type_names() {
  std::string names;
  for (OutType t : kOutTypes) names += (names.empty() ? "" : ", ") + std::string(out_type_name(t));
  return names;
}

bool is_quant_mix(OutType t) {
  return t == OutType::Q4_K_M || t == OutType::Q5_K_M || t == OutType::Q6_K;
}

ConvertResult convert_to_gguf(const fs::path& hf_dir, const fs::path& out_path,
                              const ConvertOptions& options) {
  return run_conversion(hf_dir, out_path, options, text_converter);
}

ConvertResult convert_mmproj_to_gguf(const fs::path& hf_dir, const fs::path& out_path,
                                     const ConvertOptions& options) {
  // llama-quantize has no mix for projectors (mtmd's own files are f16): the text model's mix leaves
  // the projector f16.
  if (options.out_type && is_quant_mix(*options.out_type)) {
    ConvertOptions f16 = options;
    f16.out_type = OutType::F16;
    return run_conversion(hf_dir, out_path, f16, projector_converter);
  }
  return run_conversion(hf_dir, out_path, options, projector_converter);
}

}  // namespace ge::convert
