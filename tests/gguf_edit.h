// Lying or foreign GGUF files made from good ones, for the loaders' tests.
#pragma once
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>

#include "formats/gguf.h"

namespace ge::test {

// A copy of the GGUF file `in` at `out`, tensors byte for byte: metadata keys set (or dropped, with nullopt),
// tensors renamed by `rename`, and those it names "" left out.
inline void rewrite_gguf(const std::filesystem::path& in, const std::filesystem::path& out,
                         const std::map<std::string, std::optional<formats::GgufValue>>& keys,
                         const std::function<std::string(const std::string&)>& rename = {}) {
  const formats::GgufFile g(in);
  formats::GgufWriter w;
  for (const auto& [k, v] : g.metadata().entries())
    if (!keys.count(k)) w.add(k, v);
  for (const auto& [k, v] : keys)
    if (v) w.add(k, *v);
  std::vector<const Tensor*> kept;
  for (const Tensor* t : g.all()) {
    const std::string name = rename ? rename(t->name) : t->name;
    if (name.empty()) continue;
    w.add_tensor(name, t->dtype, t->shape);
    kept.push_back(t);
  }
  w.write(out, [&](size_t i, std::ostream& os) {
    os.write(reinterpret_cast<const char*>(kept[i]->data), static_cast<std::streamsize>(kept[i]->nbytes));
  });
}

}  // namespace ge::test
