// Reading a small JSON file (config.json, generation_config.json, ...) with errors that name the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace ge::formats {

// The most a small JSON file may hold: the largest real one (a sharded index) is under 100 KB.
inline constexpr uintmax_t kMaxJsonFileBytes = 64u << 20;

// Throws std::runtime_error "FILE: cannot open", "FILE: N bytes, more than ..." or "FILE: invalid JSON: ...".
nlohmann::json read_json_file(const std::filesystem::path& file);

}  // namespace ge::formats
