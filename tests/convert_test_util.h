// Helpers shared by the `gemma convert` tests: converting a fixture, reading raw values out of tensor
// data, and a copy of a checkpoint to break.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "convert/gguf_convert.h"
#include "test_util.h"

namespace ge::test {

// Converts the checkpoint `src` to out_dir/out.gguf; `type` nullopt keeps the checkpoint's dtype.
inline std::filesystem::path convert_fixture(const std::filesystem::path& src,
                                             const std::filesystem::path& out_dir,
                                             std::optional<convert::OutType> type) {
  const std::filesystem::path out = out_dir / "out.gguf";
  convert::convert_to_gguf(src, out, {.out_type = type, .progress = {}});
  return out;
}

// Tensor data need not be aligned for the value's type: read through memcpy.
inline uint16_t u16_at(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float f32_at(const std::byte* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// A copy of a fixture checkpoint, at dir/name, to break; `out` lies in a folder of its own, which a failed
// conversion must leave empty.
struct CheckpointCopy {
  ScratchDir dir;
  std::filesystem::path src;
  std::filesystem::path out;

  explicit CheckpointCopy(const std::filesystem::path& from, const std::string& name = "ckpt",
                          const std::string& out_name = "model.gguf")
      : src(dir.path() / name), out(dir.path() / "out" / out_name) {
    std::filesystem::create_directories(src);
    std::filesystem::create_directories(out.parent_path());
    copy_files(from, src);
  }
  std::string convert_error() const {
    return error_of([&] { convert::convert_to_gguf(src, out); });
  }
  bool output_dir_empty() const { return std::filesystem::is_empty(out.parent_path()); }
};

}  // namespace ge::test
