// What the fuzz targets share: the readers take files, so each input is written where a reader looks for it
// (under /dev/shm, a memory file system), and an exception is the expected answer to a bad input: only a
// crash, a sanitizer report, a leak or a hang is a finding.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace ge::fuzz {

// A folder of this process's own, made once.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const auto d = std::filesystem::path("/dev/shm") / ("gemma-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

// Writes the input as `name` (a path relative to the scratch folder) and returns its path.
inline std::filesystem::path write_input(const uint8_t* data, size_t size, const std::filesystem::path& name) {
  const auto path = scratch_dir() / name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
  return path;
}

}  // namespace ge::fuzz
