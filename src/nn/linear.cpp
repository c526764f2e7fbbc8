#include "nn/linear.h"

#include <algorithm>
#include <map>

#include "kernels/ops.h"
#include "kernels/quantize.h"

namespace ge::nn {

namespace {
template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
// C++20 deduces this itself; clang 14 (the fuzz build's compiler) still needs the guide.
template <class... F>
Overloaded(F...) -> Overloaded<F...>;
}  // namespace

int64_t weight_rows(const Weight& w) {
  return std::visit(Overloaded{[](const Tensor& t) { return t.rows(); },
                               [](const kernels::QuantizedMatrix& q) { return q.rows; }},
                    w);
}

int64_t weight_cols(const Weight& w) {
  return std::visit(Overloaded{[](const Tensor& t) { return t.cols(); },
                               [](const kernels::QuantizedMatrix& q) { return q.cols; }},
                    w);
}

std::string weight_format(const Weight& w) {
  return std::visit(Overloaded{[](const Tensor& t) { return std::string(dtype_info(t.dtype).name); },
                               [](const kernels::QuantizedMatrix& q) { return kernels::describe(q.params); }},
                    w);
}

size_t weight_bytes(const Weight& w) {
  return std::visit(Overloaded{[](const Tensor& t) { return t.nbytes; },
                               [](const kernels::QuantizedMatrix& q) {
                                 const size_t rows = static_cast<size_t>(q.rows);
                                 return rows *
                                        (q.code_row_bytes() + q.scale_row_bytes() * (q.biases ? 2 : 1));
                               }},
                    w);
}

Weight row_slice(const Weight& w, int64_t begin, int64_t count) {
  if (const Tensor* t = std::get_if<Tensor>(&w)) {
    const size_t row_bytes = t->nbytes / static_cast<size_t>(t->rows());  // rows are whole blocks
    Tensor slice = *t;
    slice.name = t->name + "[" + std::to_string(begin) + ":" + std::to_string(begin + count) + "]";
    slice.shape = {count, t->cols()};
    slice.data = t->data + static_cast<size_t>(begin) * row_bytes;
    slice.nbytes = static_cast<size_t>(count) * row_bytes;
    return slice;
  }
  kernels::QuantizedMatrix q = std::get<kernels::QuantizedMatrix>(w);
  const auto first = static_cast<size_t>(begin);
  q.name += "[" + std::to_string(begin) + ":" + std::to_string(begin + count) + "]";
  q.codes += first * q.code_row_bytes();
  q.scales += first * q.scale_row_bytes();
  if (q.biases) q.biases += first * q.scale_row_bytes();
  q.rows = count;
  return q;
}

std::vector<std::span<const std::byte>> weight_ranges(const Weight& w) {
  if (const Tensor* t = std::get_if<Tensor>(&w)) return {{t->data, t->nbytes}};
  const auto& q = std::get<kernels::QuantizedMatrix>(w);
  const auto rows = static_cast<size_t>(q.rows);
  std::vector<std::span<const std::byte>> out = {{q.codes, rows * q.code_row_bytes()},
                                                 {q.scales, rows * q.scale_row_bytes()}};
  if (q.biases) out.push_back({q.biases, rows * q.scale_row_bytes()});
  return out;
}

std::string formats_summary(const std::vector<const Linear*>& layers) {
  std::map<std::string, int> count;
  for (const Linear* l : layers) ++count[weight_format(l->weight())];
  std::vector<std::pair<int, std::string>> order;
  for (const auto& [format, n] : count) order.emplace_back(-n, format);
  std::sort(order.begin(), order.end());
  std::string joined;
  for (const auto& [n, format] : order) joined += (joined.empty() ? "" : "+") + format;
  return joined;
}

Linear::Linear(Weight weight, const Tensor* bias) : weight_(std::move(weight)) {
  if (bias) {
    bias_.resize(static_cast<size_t>(bias->numel()));
    kernels::dequantize_row(*bias, 0, 1.0f, bias_.data());
  }
}

void Linear::operator()(kernels::ThreadPool& pool, const float* x, int64_t n, float* y,
                        kernels::Precision precision) const {
  const Tensor* tensor = std::get_if<Tensor>(&weight_);
  if (precision == kernels::Precision::kReducedActivations && repacked_ &&
      (repacked_only_ || !(tensor && kernels::has_reduced_kernel(*tensor, n))))
    kernels::matmul(pool, *repacked_, x, n, y);
  else
    std::visit(Overloaded{[&](const Tensor& t) { kernels::matmul(pool, t, x, n, y, precision); },
                          [&](const kernels::QuantizedMatrix& q) { kernels::matmul(pool, q, x, n, y); }},
               weight_);
  if (bias_.empty()) return;
  const int64_t out = out_features();
  for (int64_t t = 0; t < n; ++t) kernels::add_inplace(y + t * out, bias_.data(), out);
}

bool Linear::prepare_reduced_activations(bool keep_reading_original) {
  if (!repacked_) {
    auto r = std::visit([](const auto& w) { return kernels::RepackedMatrix::repack(w); }, weight_);
    if (r) repacked_ = std::make_shared<const kernels::RepackedMatrix>(std::move(*r));
  }
  repacked_only_ = repacked_ && !keep_reading_original;
  return repacked_only_;
}

Linear Linear::quantized_copy(DType block) const {
  const Tensor* t = std::get_if<Tensor>(&weight_);
  if (!t || is_ggml_block(t->dtype) || (block != DType::Q8_0 && block != DType::Q4_0)) return *this;
  const int64_t rows = t->rows(), cols = t->cols();
  const size_t row_bytes = *dtype_bytes(block, cols);
  auto blocks = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(rows) * row_bytes);
  std::vector<float> values(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::dequantize_row(*t, r, 1.0f, values.data());
    kernels::quantize_blocks(block, values.data(), cols, blocks->data() + static_cast<size_t>(r) * row_bytes);
  }
  Tensor q = *t;
  q.name = t->name + " (" + std::string(dtype_info(block).name) + " copy)";
  q.dtype = block;
  q.data = blocks->data();
  q.nbytes = blocks->size();
  Linear copy(q);
  copy.bias_ = bias_;
  copy.owned_ = std::move(blocks);
  return copy;
}

void Embedding::lookup(int32_t id, float scale, float* out) const {
  std::visit(Overloaded{[&](const Tensor& t) { kernels::dequantize_row(t, id, scale, out); },
                        [&](const kernels::QuantizedMatrix& q) {
                          kernels::dequantize_row(q, id, out);
                          for (int64_t i = 0; i < q.cols; ++i) out[i] *= scale;
                        }},
             table_.weight());
}

RMSNorm RMSNorm::unscaled(int64_t size, float eps) {
  RMSNorm norm;
  norm.size_ = size;
  norm.eps_ = eps;
  return norm;
}

void RMSNorm::operator()(const float* x, int64_t rows, float* out) const {
  if (!weight_.data)
    kernels::rms_norm_unscaled(x, eps_, rows, size_, out);
  else
    kernels::rms_norm(x, weight_, eps_, one_plus_, rows, size_, out);
}

void LayerNorm::operator()(const float* x, int64_t rows, float* out) const {
  kernels::layer_norm(x, weight_, bias_, eps_, rows, weight_.numel(), out);
}

}  // namespace ge::nn
