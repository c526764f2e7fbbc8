// Read-only memory map of a whole file: weights are used in place, never copied at load. A file truncated or
// rewritten in place while mapped ends the process at the next read of a lost page with an error naming the file
// (exit code 1), not with "Bus error"; a file replaced by a rename is not affected (the mapping keeps the old one).
#pragma once
#include <cstddef>
#include <filesystem>
#include <span>

namespace ge::formats {

class MappedFile {
 public:
  // populate: map every page up front (for weights about to be used); otherwise pages are mapped on first
  // touch (for reading headers only). Throws std::runtime_error naming the file.
  explicit MappedFile(const std::filesystem::path& path, bool populate = false);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;
  MappedFile(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Drops the pages of [data, data + n), part of a mapping, from this process (they stay in the page cache),
// so that streaming through a whole mmapped checkpoint does not add up in the resident set.
void release_pages(const std::byte* data, size_t n);

// Tells the kernel that [data, data + n) (the pages wholly inside it) is read at random, a row here and
// there: a fault then maps that page alone, without reading ahead or mapping its neighbours, so that the
// resident set grows with the rows read.
void advise_random_access(const std::byte* data, size_t n);

// Maps the pages of [data, data + n) now (what `populate` does for a whole file), for the tensors of a
// file that are about to be used when others in it may never be.
void populate_pages(const std::byte* data, size_t n);

}  // namespace ge::formats
