// The hashes the Hugging Face hub names files by: the sha256 of an LFS file's bytes, and the git blob id
// (sha1 of "blob <size>\0" + bytes) of a file kept in git itself. OpenSSL's EVP does the hashing.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace ge::hub {

class Digest {
 public:
  static Digest sha256();
  static Digest git_blob(uint64_t size);  // the header is hashed here; then exactly `size` bytes
  ~Digest();
  Digest(Digest&&) noexcept;
  Digest& operator=(Digest&&) = delete;

  void update(std::string_view bytes);
  std::string hex();  // lower-case; ends the digest

 private:
  struct Context;
  explicit Digest(bool sha1);
  std::unique_ptr<Context> ctx_;
};

// The digest of a whole file, read in chunks; throws naming the file when it cannot be read.
std::string file_digest(const std::filesystem::path& file, Digest digest);

}  // namespace ge::hub
