// A parsed JSON file (simdjson DOM) with typed accessors whose errors read "FILE: FIELD: what".
// String views it hands out point into the parser and live as long as this object.
#pragma once
#include <simdjson.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace ge::tokenizer_detail {

class JsonFile {
 public:
  using Element = simdjson::dom::element;
  using Object = simdjson::dom::object;
  using Array = simdjson::dom::array;

  explicit JsonFile(const std::filesystem::path& path);
  JsonFile(const JsonFile&) = delete;
  JsonFile& operator=(const JsonFile&) = delete;

  const std::string& name() const { return name_; }
  Object root() const { return as_object(root_, "(root)"); }

  [[noreturn]] void fail(std::string_view field, std::string_view what) const;

  // `field` names the value in messages, e.g. "model.vocab".
  Element member(Object object, std::string_view key, std::string_view field) const;
  std::optional<Element> optional_member(Object object, std::string_view key) const;  // absent or null
  Object as_object(Element e, std::string_view field) const;
  Array as_array(Element e, std::string_view field) const;
  std::string_view as_string(Element e, std::string_view field) const;
  int64_t as_int(Element e, std::string_view field) const;
  bool as_bool(Element e, std::string_view field) const;

  bool bool_or(Object object, std::string_view key, std::string_view field, bool fallback) const;
  std::string_view string_member(Object object, std::string_view key, std::string_view field) const;

 private:
  std::string name_;
  simdjson::padded_string text_;
  simdjson::dom::parser parser_;
  Element root_;
};

std::string join_field(std::string_view parent, std::string_view child);
std::string indexed_field(std::string_view parent, size_t index);

}  // namespace ge::tokenizer_detail
