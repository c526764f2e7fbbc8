#include "formats/json_file.h"

#include <fstream>
#include <stdexcept>

namespace ge::formats {

nlohmann::json read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot open");
  std::error_code error;
  const uintmax_t size = std::filesystem::file_size(file, error);
  if (!error && size > kMaxJsonFileBytes)
    throw std::runtime_error(file.string() + ": " + std::to_string(size) + " bytes, more than the " +
                             std::to_string(kMaxJsonFileBytes) + " a JSON file of a model may take");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(file.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace ge::formats
