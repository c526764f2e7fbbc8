#include "tokenizer/json_file.h"

#include <stdexcept>

namespace ge::tokenizer_detail {

namespace {

// tokenizer.json is read whole: the real Gemma 3 one is 33 MB; a file claiming gigabytes is refused before it is.
constexpr uintmax_t kMaxTokenizerJsonBytes = uintmax_t{1} << 30;

}  // namespace

JsonFile::JsonFile(const std::filesystem::path& path) : name_(path.string()) {
  std::error_code error;
  if (const uintmax_t size = std::filesystem::file_size(path, error); !error && size > kMaxTokenizerJsonBytes)
    throw std::runtime_error(name_ + ": " + std::to_string(size) + " bytes, more than the " +
                             std::to_string(kMaxTokenizerJsonBytes) + " a tokenizer.json may take");
  if (simdjson::padded_string::load(name_).get(text_) != simdjson::SUCCESS)
    throw std::runtime_error(name_ + ": cannot read the file");
  if (const auto error = parser_.parse(text_).get(root_); error != simdjson::SUCCESS)
    throw std::runtime_error(name_ + ": invalid JSON: " + simdjson::error_message(error));
}

void JsonFile::fail(std::string_view field, std::string_view what) const {
  throw std::runtime_error(name_ + ": " + std::string(field) + ": " + std::string(what));
}

JsonFile::Element JsonFile::member(Object object, std::string_view key, std::string_view field) const {
  Element e;
  if (object.at_key(key).get(e) != simdjson::SUCCESS) fail(field, "missing");
  return e;
}

std::optional<JsonFile::Element> JsonFile::optional_member(Object object, std::string_view key) const {
  Element e;
  if (object.at_key(key).get(e) != simdjson::SUCCESS || e.is_null()) return std::nullopt;
  return e;
}

JsonFile::Object JsonFile::as_object(Element e, std::string_view field) const {
  Object o;
  if (e.get_object().get(o) != simdjson::SUCCESS) fail(field, "expected an object");
  return o;
}

JsonFile::Array JsonFile::as_array(Element e, std::string_view field) const {
  Array a;
  if (e.get_array().get(a) != simdjson::SUCCESS) fail(field, "expected an array");
  return a;
}

std::string_view JsonFile::as_string(Element e, std::string_view field) const {
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS) fail(field, "expected a string");
  return s;
}

int64_t JsonFile::as_int(Element e, std::string_view field) const {
  int64_t v = 0;
  if (e.get_int64().get(v) != simdjson::SUCCESS) fail(field, "expected an integer");
  return v;
}

bool JsonFile::as_bool(Element e, std::string_view field) const {
  bool v = false;
  if (e.get_bool().get(v) != simdjson::SUCCESS) fail(field, "expected true or false");
  return v;
}

bool JsonFile::bool_or(Object object, std::string_view key, std::string_view field, bool fallback) const {
  const auto e = optional_member(object, key);
  return e ? as_bool(*e, field) : fallback;
}

std::string_view JsonFile::string_member(Object object, std::string_view key, std::string_view field) const {
  return as_string(member(object, key, field), field);
}

std::string join_field(std::string_view parent, std::string_view child) {
  return std::string(parent) + "." + std::string(child);
}

std::string indexed_field(std::string_view parent, size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

}  // namespace ge::tokenizer_detail
