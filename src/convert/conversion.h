// What every family converter shares (internal to src/convert): the checkpoint it reads, the plan of
// tensors it writes (renamed, stacked, padded, shifted, clipped, retyped), and the metadata helpers. A family
// converter (gemma_text.cpp, gemma3n.cpp, mmproj.cpp) only adds metadata keys and plans tensors; the
// driver (gguf_convert.cpp) streams the planned tensors into the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "convert/gguf_convert.h"
#include "formats/gguf.h"
#include "convert/source_tensors.h"
#include "tensor/dtype.h"

namespace ge::kernels {
class ThreadPool;
}

namespace ge::convert {

[[noreturn]] void fail(const std::string& what);

// The checkpoint folder as read once by the driver.
struct Checkpoint {
  std::filesystem::path dir;
  nlohmann::json config;            // config.json
  nlohmann::json tokenizer_config;  // tokenizer_config.json, or an empty object
  const SourceTensors& tensors;
};

// One GGUF tensor: `values` when the converter computes it (parts empty), else the source tensors `parts`, stacked along a new outermost dim when there are several
// (shape then starts with parts.size()), else written with `shape`, whose outermost dim may cut the
// source's rows (vocabulary shorter than the embedding table) or extend them with zero rows (padding).
// Every value v is written as clamp(v + add, -clip, clip) in `out`.
struct PlannedTensor {
  PlannedTensor(std::string name_, std::vector<const Tensor*> parts_, DType out_, std::vector<int64_t> shape_)
      : name(std::move(name_)), parts(std::move(parts_)), out(out_), shape(std::move(shape_)) {}

  std::string name;
  std::vector<const Tensor*> parts;
  DType out = DType::F32;
  std::vector<int64_t> shape;  // written shape, outermost first
  float add = 0;
  std::optional<float> clip;
  std::vector<float> values;
};

// The type of 2-D and larger tensors for out type t; for a mix (q4_k_m, ...), that of the matrices it
// leaves unquantized (f16, as in the f16 GGUF llama-quantize would start from).
DType dtype_of(OutType t);

class TensorPlan {
 public:
  // Matrices (2-D and larger) are planned as dtype_of(out_type); 1-D tensors and norms are always f32.
  TensorPlan(const Checkpoint& ckpt, OutType out_type) : ckpt_(ckpt), matrix_type_(dtype_of(out_type)) {}

  // The source tensor, checked: present, a float dtype, and of this shape. Marks it used.
  const Tensor& get(const std::string& name, const std::vector<int64_t>& shape);
  const Tensor* find(const std::string& name) const { return ckpt_.tensors.find(name); }

  // Plans `src_name` as `gguf_name` with `shape` (the source's, checked). Returns the entry for tweaks
  // (add, clip); the reference is valid until the next add.
  PlannedTensor& add(std::string gguf_name, const std::string& src_name, const std::vector<int64_t>& shape);
  // Plans an entry made by the caller (parts already checked with get()).
  PlannedTensor& add(PlannedTensor t);

  // The type a tensor of this shape is written in: f32 for 1-D, else the matrix type, or f16 when a row
  // is not a whole number of the block type's blocks (as llama.cpp falls back).
  DType type_for(const std::vector<int64_t>& shape) const;

  // Source tensors that are neither planned nor matched by `skip` would be silently lost: refuse them.
  template <class Skip>
  void check_all_used(Skip skip, const std::string& what) const {
    for (const Tensor* t : ckpt_.tensors.all())
      if (!used_.count(t->name) && !skip(std::string_view(t->name)))
        fail(ckpt_.dir.string() + ": tensor '" + t->name + "' is not part of " + what);
  }

  const std::vector<PlannedTensor>& tensors() const { return tensors_; }
  std::vector<PlannedTensor>& tensors() { return tensors_; }

 private:
  const Checkpoint& ckpt_;
  DType matrix_type_;
  std::vector<PlannedTensor> tensors_;
  std::set<std::string, std::less<>> used_;
};

// What write_planned_tensor reuses from one tensor to the next: its conversion buffers, and the threads
// that quantize block types (nullptr: quantize on the calling thread).
struct WriteBuffers {
  std::vector<float> floats;
  std::vector<std::byte> bytes;
  kernels::ThreadPool* pool = nullptr;
};

// Writes one planned tensor's bytes, converting through f32 in chunks (MLX-quantized parts dequantized a
// chunk of rows at a time) and dropping each source range from the resident set once written.
void write_planned_tensor(const PlannedTensor& t, const SourceTensors& sources, std::ostream& out,
                          WriteBuffers& buffers);

// llama-quantize's type for one tensor of a K mix (q4_k_m, q5_k_m, q6_k; quant_mix.cpp), from the tensor's
// GGUF name and shape and what it needs of the whole model.
struct MixModel {
  int64_t layers = 0;           // block count
  int64_t attn_v_tensors = 0;   // tensors named *attn_v.weight (one per layer)
  bool tied_embeddings = true;  // no output.weight: token_embd doubles as the output matrix
};
// nullopt: llama-quantize leaves the tensor as it finds it (norms, 1-D tensors, AltUp, LAuReL, ...).
std::optional<DType> mix_type(OutType mix, const MixModel& model, std::string_view name,
                              const std::vector<int64_t>& shape);
// Retypes every planned tensor that mix_type quantizes.
void assign_mix_types(OutType mix, TensorPlan& plan);

// Gemma 3n / 4 ConditionalGeneration checkpoints keep the decoder under model.language_model., their CausalLM
// ones under model.
std::string text_model_prefix(const Checkpoint& ckpt);
// Their audio and vision towers and the embedders of those, which a text GGUF leaves out.
bool is_multimodal_tower_tensor(std::string_view name);
// The gated MLP of a Gemma layer with the norms around it, as llama.cpp names them (norms copied unshifted).
void plan_mlp(int64_t hidden, int64_t ff, const std::string& src, const std::string& dst, TensorPlan& plan);

// general.architecture, general.type and general.name (the checkpoint folder's name).
void add_general(formats::GgufWriter& w, const std::string& arch, const std::filesystem::path& dir,
                 const std::string& type = "model");
uint32_t file_type_id(OutType t);

// A family converter: adds metadata to `w` (in llama.cpp's order) and plans every tensor. Returns the
// architecture name.
using FamilyConverter = std::string (*)(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                                        TensorPlan& plan);

// gemma, gemma2, gemma3_text and the text part of gemma3 (gemma_text.cpp).
std::string convert_gemma_text(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                               TensorPlan& plan);
// gemma3n, text model only (gemma3n.cpp).
std::string convert_gemma3n(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                            TensorPlan& plan);
// gemma4, text model only (gemma4.cpp).
std::string convert_gemma4(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w, TensorPlan& plan);
// gemma3's SigLIP tower and projector as llama.cpp's mtmd "clip" file (mmproj.cpp).
std::string convert_gemma3_mmproj(const Checkpoint& ckpt, OutType out_type, formats::GgufWriter& w,
                                  TensorPlan& plan);

}  // namespace ge::convert
