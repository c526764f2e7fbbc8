#include "hub/digest.h"

#include <openssl/evp.h>

#include <fstream>
#include <stdexcept>
#include <vector>

namespace ge::hub {

struct Digest::Context {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  ~Context() { EVP_MD_CTX_free(md); }
};

Digest::Digest(bool sha1) : ctx_(std::make_unique<Context>()) {
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, sha1 ? EVP_sha1() : EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("OpenSSL: cannot start a digest");
}

Digest::~Digest() = default;
Digest::Digest(Digest&&) noexcept = default;

Digest Digest::sha256() {
  return Digest(false);
}

Digest Digest::git_blob(uint64_t size) {
  Digest d(true);
  const std::string header = "blob " + std::to_string(size);
  d.update(std::string_view(header.c_str(), header.size() + 1));  // with its NUL
  return d;
}

void Digest::update(std::string_view bytes) {
  if (EVP_DigestUpdate(ctx_->md, bytes.data(), bytes.size()) != 1)
    throw std::runtime_error("OpenSSL: digest failed");
}

std::string Digest::hex() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_->md, out, &n) != 1) throw std::runtime_error("OpenSSL: digest failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < n; ++i) {
    s += kHex[out[i] >> 4];
    s += kHex[out[i] & 15];
  }
  return s;
}

std::string file_digest(const std::filesystem::path& file, Digest digest) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(file.string() + ": cannot open");
  std::vector<char> buffer(1 << 20);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
    digest.update(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())));
  if (in.bad()) throw std::runtime_error(file.string() + ": read error");
  return digest.hex();
}

}  // namespace ge::hub
