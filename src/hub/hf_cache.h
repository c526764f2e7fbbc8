// The huggingface_hub cache, laid out as huggingface_hub writes it (file_download.py), so that whatever
// transformers, huggingface-cli, mlx-lm or `gemma pull` downloaded is found by the others:
//   <cache>/models--ORG--NAME/refs/<revision>          the commit hash a branch or tag pointed to
//   <cache>/models--ORG--NAME/snapshots/<commit>/FILE  a relative symlink to ../../blobs/<etag>
//   <cache>/models--ORG--NAME/blobs/<etag>             the file's bytes; <etag>.incomplete while downloading
// where <etag> is the file's sha256 for LFS files and its git blob id otherwise.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ge::hub {

// $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (huggingface_hub's constants.py).
std::filesystem::path hf_home_dir();

// huggingface_hub's choice (constants.py): $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
// else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. One folder, never a search: a download
// and a lookup must agree on where models are.
std::filesystem::path hf_cache_dir();

// A model repository at a revision: "google/gemma-3-1b-it", "google/gemma-3-1b-it@v1", "ORG/NAME@<commit>".
struct RepoRef {
  std::string repo_id;            // ORG/NAME
  std::string revision = "main";  // a branch, a tag or a 40-hex commit hash
  std::string display() const;    // what the user typed: the revision only when not main
};

// Parses ORG/NAME[@REVISION] with huggingface_hub's rules for repo ids (letters, digits, '_', '-', '.', each
// part starting and ending with a letter, digit or '_', no "--" or ".."); nullopt for anything else, e.g. a
// path with more folders. The revision may hold '/' (refs/pr/1) but no ".." component.
std::optional<RepoRef> parse_repo_ref(std::string_view text);

// "models--ORG--NAME": the repo's folder in the cache.
std::string repo_folder_name(const std::string& repo_id);

bool is_commit_hash(std::string_view revision);

// The snapshot folder of `ref` in `cache` (refs/<revision> read for a branch or tag, a commit hash taken as
// is), or nullopt when the cache has none; `looked_at` gets the path that was missing.
std::optional<std::filesystem::path> find_snapshot(const std::filesystem::path& cache, const RepoRef& ref,
                                                   std::filesystem::path* looked_at = nullptr);

// Every snapshot a ref points to ("ORG/NAME" for main, "ORG/NAME@REF" for other refs), and snapshots no
// ref names as "ORG/NAME@<commit>" (downloaded by commit hash). Sorted by name.
struct CachedSnapshot {
  std::string name;
  std::filesystem::path path;
};
std::vector<CachedSnapshot> list_hf_cache(const std::filesystem::path& cache);

}  // namespace ge::hub
