#include "hub/pull.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "hub/digest.h"
#include "hub/http.h"

namespace ge::hub {

namespace fs = std::filesystem;

namespace {

// One file of the revision as the API lists it.
struct RemoteFile {
  std::string path;  // rfilename: relative, '/'-separated
  uint64_t size = 0;
  std::string etag;  // the blob's name: the LFS sha256, or the git blob id of a file kept in git
  bool lfs = false;
};

struct RepoInfo {
  std::string commit;
  std::vector<RemoteFile> files;
};

std::string trimmed(std::string s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  const auto last = s.find_last_not_of(" \t\r\n");
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// huggingface_hub's order: $HF_TOKEN, then the file `huggingface-cli login` writes.
std::string token_from_env() {
  if (auto t = trimmed(env_or("HF_TOKEN", "")); !t.empty()) return t;
  std::ifstream in(env_or("HF_TOKEN_PATH", (hf_home_dir() / "token").string()));
  std::string token;
  std::getline(in, token);
  return trimmed(token);
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// A file name from the hub becomes a path below snapshots/<commit>: nothing absolute, nothing that climbs.
bool safe_relative_path(const std::string& path) {
  if (path.empty() || path.front() == '/') return false;
  for (const auto& part : fs::path(path))
    if (part == ".." || part == "." || part.empty()) return false;
  return true;
}

// The hub's own explanation, {"error": "..."}, when the body has one.
std::string hub_message(const std::string& body) {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string())
    return ": " + j["error"].get<std::string>();
  return "";
}

[[noreturn]] void fail_http(const std::string& what, const HttpResponse& r, const RepoRef& ref,
                            const PullOptions& o) {
  const std::string status = what + ": HTTP " + std::to_string(r.status) + hub_message(r.error_body);
  if (r.status == 401 || r.status == 403)
    throw std::runtime_error(
        status + "\n" + ref.repo_id + " is gated or private: accept its license on " + o.endpoint + "/" +
        ref.repo_id + " (logged in), then set HF_TOKEN to an access token of that account (" + o.endpoint +
        "/settings/tokens)" + (o.token.empty() ? "" : "; the token given was refused or lacks access"));
  if (r.status == 404)
    throw std::runtime_error(status + "\nno repo " + ref.repo_id + " with a revision '" + ref.revision +
                             "' on " + o.endpoint + " (a private repo needs HF_TOKEN)");
  throw std::runtime_error(status);
}

RemoteFile remote_file(const nlohmann::json& sibling, const std::string& url) {
  RemoteFile f;
  f.path = sibling.value("rfilename", "");
  if (!safe_relative_path(f.path))
    throw std::runtime_error(url + ": file name '" + f.path + "' is not a relative path");
  const std::string where = url + ": " + f.path;
  if (sibling.contains("lfs") && sibling["lfs"].is_object()) {
    f.lfs = true;
    f.etag = sibling["lfs"].value("sha256", "");
    f.size = sibling["lfs"].value("size", uint64_t{0});
    if (f.etag.size() != 64 || !is_hex(f.etag))
      throw std::runtime_error(where + ": lfs.sha256 is not 64 hex digits");
  } else {
    f.etag = sibling.value("blobId", "");
    f.size = sibling.value("size", uint64_t{0});
    if (f.etag.size() != 40 || !is_hex(f.etag))
      throw std::runtime_error(where + ": blobId is not 40 hex digits (the API was asked for blobs=true)");
  }
  return f;
}

RepoInfo repo_info(const RepoRef& ref, const PullOptions& o) {
  const std::string url = o.endpoint + "/api/models/" + ref.repo_id + "/revision/" +
                          url_escape(ref.revision, false) + "?blobs=true";
  std::string body;
  const HttpResponse r = http_get({url, o.token, 0, [&](long, std::string_view chunk) { body += chunk; }});
  if (r.status != 200) fail_http(ref.display(), r, ref, o);
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) throw std::runtime_error(url + ": the answer is not a JSON object");
  RepoInfo info;
  info.commit = j.value("sha", "");
  if (!is_commit_hash(info.commit)) throw std::runtime_error(url + ": 'sha' is not a 40-hex commit hash");
  if (!j.contains("siblings") || !j["siblings"].is_array())
    throw std::runtime_error(url + ": no 'siblings' list");
  for (const auto& sibling : j["siblings"]) info.files.push_back(remote_file(sibling, url));
  return info;
}

// huggingface_hub's allow_patterns: fnmatch, where '*' also crosses '/', and "dir/" means everything in dir.
bool included(const std::string& path, const std::vector<std::string>& patterns) {
  if (patterns.empty()) return true;
  for (std::string p : patterns) {
    if (p.ends_with('/')) p += '*';
    if (fnmatch(p.c_str(), path.c_str(), 0) == 0) return true;
  }
  return false;
}

// huggingface_hub's .locks/<repo folder>/<etag>.lock: two downloads of one blob (two pulls, or a pull and
// transformers) never write the same .incomplete file at once.
class BlobLock {
 public:
  explicit BlobLock(const fs::path& file) {
    fs::create_directories(file.parent_path());
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) throw std::runtime_error(file.string() + ": cannot lock");
  }
  ~BlobLock() { ::close(fd_); }
  BlobLock(const BlobLock&) = delete;
  BlobLock& operator=(const BlobLock&) = delete;

 private:
  int fd_ = -1;
};

// Appends the rest of the file to `incomplete` (from its current size), and returns the bytes received.
uint64_t fetch_rest(const RemoteFile& f, const std::string& url, const fs::path& incomplete,
                    const RepoRef& ref, const PullOptions& o) {
  uint64_t have = fs::exists(incomplete) ? fs::file_size(incomplete) : 0;
  if (have >= f.size && f.size > 0) return 0;
  std::ofstream out(incomplete, std::ios::binary | std::ios::app);
  uint64_t received = 0;
  bool first = true;
  const auto on_body = [&](long status, std::string_view chunk) {
    if (first && have > 0 && status != 206) {  // the server sent the whole file, not the range asked for
      out.close();
      out.open(incomplete, std::ios::binary | std::ios::trunc);
      have = 0;
    }
    first = false;
    if (!out.write(chunk.data(), static_cast<std::streamsize>(chunk.size())))
      throw std::runtime_error(incomplete.string() + ": cannot write (disk full?)");
    received += chunk.size();
    if (o.progress) o.progress({f.path, have + received, f.size});
  };
  HttpResponse r;
  try {
    r = http_get({url, o.token, have, on_body});
  } catch (const std::exception& e) {  // cut off: what arrived stays for the next run
    out.close();
    throw std::runtime_error(std::string(e.what()) + "\n" + std::to_string(fs::file_size(incomplete)) +
                             " of " + std::to_string(f.size) + " bytes of " + f.path + " are kept in " +
                             incomplete.string() + ": run the same command again to resume");
  }
  out.close();
  if (!out) throw std::runtime_error(incomplete.string() + ": cannot write (disk full?)");
  if (r.status < 200 || r.status >= 300) {
    if (fs::file_size(incomplete) == 0) fs::remove(incomplete);
    fail_http(f.path, r, ref, o);
  }
  return received;
}

// The downloaded bytes against the hub's hash and size; a mismatch removes them, so a rerun starts afresh.
void verify(const RemoteFile& f, const fs::path& incomplete) {
  const uint64_t size = fs::file_size(incomplete);
  std::string problem;
  if (size != f.size) {
    problem = "has " + std::to_string(size) + " bytes, the hub lists " + std::to_string(f.size);
  } else {
    const std::string got = file_digest(incomplete, f.lfs ? Digest::sha256() : Digest::git_blob(f.size));
    if (got != f.etag)
      problem = std::string(f.lfs ? "has sha256 " : "has git blob id ") + got + ", the hub lists " + f.etag;
  }
  if (problem.empty()) return;
  fs::remove(incomplete);
  throw std::runtime_error(f.path + ": the download is corrupted: it " + problem +
                           " (removed; run the command again)");
}

// snapshots/<commit>/FILE -> ../../blobs/<etag> (deeper files climb further), relative as huggingface_hub
// makes it so the cache can move; made beside and renamed over, so a reader never finds it missing.
void link_into_snapshot(const fs::path& blob, const fs::path& pointer) {
  fs::create_directories(pointer.parent_path());
  const fs::path target = blob.lexically_relative(pointer.parent_path());
  if (fs::is_symlink(pointer) && fs::read_symlink(pointer) == target) return;
  const fs::path temporary = pointer.string() + ".link.tmp";
  fs::remove(temporary);
  fs::create_symlink(target, temporary);
  fs::rename(temporary, pointer);
}

void write_ref(const fs::path& ref_file, const std::string& commit) {
  fs::create_directories(ref_file.parent_path());
  const fs::path temporary = ref_file.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << commit;  // no newline, as huggingface_hub writes it
    if (!out.flush()) throw std::runtime_error(temporary.string() + ": cannot write");
  }
  fs::rename(temporary, ref_file);
}

}  // namespace

PullOptions pull_options_from_env() {
  PullOptions o;
  o.endpoint = env_or("HF_ENDPOINT", "https://huggingface.co");
  while (o.endpoint.ends_with('/')) o.endpoint.pop_back();
  o.token = token_from_env();
  o.cache = hf_cache_dir();
  return o;
}

PullResult pull(const RepoRef& ref, const PullOptions& o) {
  const RepoInfo info = repo_info(ref, o);
  const fs::path cache = fs::absolute(o.cache);
  const std::string folder = repo_folder_name(ref.repo_id);
  const fs::path repo = cache / folder;
  PullResult result;
  result.commit = info.commit;
  result.snapshot = repo / "snapshots" / info.commit;
  for (const RemoteFile& f : info.files) {
    if (!included(f.path, o.include)) continue;
    ++result.files;
    const fs::path blob = repo / "blobs" / f.etag;
    if (!fs::exists(blob)) {
      fs::create_directories(blob.parent_path());
      const BlobLock lock(cache / ".locks" / folder / (f.etag + ".lock"));
      if (!fs::exists(blob)) {  // another process may have finished it while we waited for the lock
        const fs::path incomplete = blob.string() + ".incomplete";
        const std::string url =
            o.endpoint + "/" + ref.repo_id + "/resolve/" + info.commit + "/" + url_escape(f.path, true);
        result.bytes_fetched += fetch_rest(f, url, incomplete, ref, o);
        verify(f, incomplete);
        fs::rename(incomplete, blob);
        ++result.downloaded;
      }
    }
    link_into_snapshot(blob, result.snapshot / f.path);
  }
  if (result.files == 0)
    throw std::runtime_error(ref.display() + ": no file of the repo matches --include (it has " +
                             std::to_string(info.files.size()) + " files)");
  if (ref.revision != info.commit) write_ref(repo / "refs" / ref.revision, info.commit);
  return result;
}

}  // namespace ge::hub
