#include "hub/hf_cache.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>

namespace ge::hub {

namespace fs = std::filesystem;

namespace {

std::optional<fs::path> env_path(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return fs::path(v);
}

fs::path home_dir() {
  if (auto home = env_path("HOME")) return *home;
  throw std::runtime_error("HOME is not set: cannot place the Hugging Face cache (set HF_HOME)");
}

bool repo_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.';
}

bool word_char(char c) {
  return repo_id_char(c) && c != '-' && c != '.';
}

bool valid_repo_part(std::string_view part) {
  return !part.empty() && part.size() <= 96 && std::all_of(part.begin(), part.end(), repo_id_char) &&
         word_char(part.front()) && word_char(part.back()) && part.find("--") == std::string_view::npos &&
         part.find("..") == std::string_view::npos;
}

// A revision is a path below refs/: nothing that climbs out of it.
bool valid_revision(std::string_view rev) {
  if (rev.empty() || rev.front() == '/' || rev.back() == '/') return false;
  for (const auto& part : fs::path(rev))
    if (part == ".." || part == "." || part.empty()) return false;
  return true;
}

std::optional<std::string> read_ref(const fs::path& file) {
  std::ifstream in(file);
  std::string commit;
  if (!in || !(in >> commit)) return std::nullopt;
  return commit;
}

}  // namespace

fs::path hf_home_dir() {
  if (auto p = env_path("HF_HOME")) return *p;
  if (auto p = env_path("XDG_CACHE_HOME")) return *p / "huggingface";
  return home_dir() / ".cache" / "huggingface";
}

fs::path hf_cache_dir() {
  if (auto p = env_path("HF_HUB_CACHE")) return *p;
  if (auto p = env_path("HUGGINGFACE_HUB_CACHE")) return *p;
  return hf_home_dir() / "hub";
}

std::string RepoRef::display() const {
  return revision == "main" ? repo_id : repo_id + "@" + revision;
}

std::optional<RepoRef> parse_repo_ref(std::string_view text) {
  RepoRef ref;
  if (const auto at = text.find('@'); at != std::string_view::npos) {
    ref.revision = text.substr(at + 1);
    text = text.substr(0, at);
    if (!valid_revision(ref.revision)) return std::nullopt;
  }
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || !valid_repo_part(text.substr(0, slash)) ||
      !valid_repo_part(text.substr(slash + 1)))
    return std::nullopt;
  ref.repo_id = text;
  return ref;
}

std::string repo_folder_name(const std::string& repo_id) {
  std::string name = "models--" + repo_id;
  name.replace(name.find('/'), 1, "--");
  return name;
}

bool is_commit_hash(std::string_view revision) {
  return revision.size() == 40 && std::all_of(revision.begin(), revision.end(),
                                              [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

std::optional<fs::path> find_snapshot(const fs::path& cache, const RepoRef& ref, fs::path* looked_at) {
  const fs::path repo = cache / repo_folder_name(ref.repo_id);
  // huggingface_hub's try_to_load_from_cache: a ref file names the commit; otherwise the revision may be
  // the commit itself.
  const fs::path ref_file = repo / "refs" / ref.revision;
  const fs::path snapshot = repo / "snapshots" / read_ref(ref_file).value_or(ref.revision);
  if (fs::is_directory(snapshot)) return snapshot;
  if (looked_at) *looked_at = fs::exists(ref_file) || is_commit_hash(ref.revision) ? snapshot : ref_file;
  return std::nullopt;
}

std::vector<CachedSnapshot> list_hf_cache(const fs::path& cache) {
  std::vector<CachedSnapshot> found;
  if (!fs::is_directory(cache)) return found;
  for (const auto& repo : fs::directory_iterator(cache)) {
    const std::string folder = repo.path().filename().string();
    if (!repo.is_directory() || !folder.starts_with("models--")) continue;
    std::string repo_id = folder.substr(8);
    const auto sep = repo_id.find("--");
    if (sep == std::string::npos) continue;
    repo_id.replace(sep, 2, "/");
    // commit -> the refs that point to it
    std::map<std::string, std::vector<std::string>> refs;
    const fs::path refs_dir = repo.path() / "refs";
    if (fs::is_directory(refs_dir))
      for (const auto& f : fs::recursive_directory_iterator(refs_dir))
        if (f.is_regular_file())
          if (auto commit = read_ref(f.path()))
            refs[*commit].push_back(f.path().lexically_relative(refs_dir).generic_string());
    const fs::path snapshots = repo.path() / "snapshots";
    if (!fs::is_directory(snapshots)) continue;
    for (const auto& snap : fs::directory_iterator(snapshots)) {
      if (!snap.is_directory()) continue;
      const std::string commit = snap.path().filename().string();
      const auto named = refs.find(commit);
      if (named == refs.end()) {
        found.push_back({repo_id + "@" + commit, snap.path()});
        continue;
      }
      for (const std::string& ref : named->second)
        found.push_back({ref == "main" ? repo_id : repo_id + "@" + ref, snap.path()});
    }
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return found;
}

}  // namespace ge::hub
