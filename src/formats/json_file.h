// Reading a small JSON file (config.json, generation_config.json, ...) with errors that name the file.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace ge::formats {

// Throws std::runtime_error "FILE: cannot open" or "FILE: invalid JSON: ...".
nlohmann::json read_json_file(const std::filesystem::path& file);

}  // namespace ge::formats
