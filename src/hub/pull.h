// `gemma pull`: a Hugging Face repo downloaded into huggingface_hub's cache exactly as huggingface_hub lays
// it out (hf_cache.h), so that transformers, mlx-lm or huggingface-cli reuse what it fetched and the other
// way round. The hub's API lists the files of the revision with their hashes
// (GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true), each missing blob is fetched from
// {endpoint}/{repo}/resolve/{commit}/{file} into blobs/<etag>.incomplete (resumed with a Range request when
// a previous run was cut off), checked against the hub's hash, renamed into blobs/, and only then linked
// from snapshots/<commit>/; refs/<rev> is written last. Nothing half-written is ever visible in snapshots/.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "hub/hf_cache.h"

namespace ge::hub {

struct FileProgress {
  const std::string& file;
  uint64_t done, total;  // bytes of the file on disk, of the file in all
};

struct PullOptions {
  std::string endpoint;         // $HF_ENDPOINT, else https://huggingface.co
  std::string token;            // $HF_TOKEN, else huggingface-cli's token file; empty: anonymous
  std::filesystem::path cache;  // hf_cache_dir()
  std::vector<std::string>
      include;  // shell patterns on file paths (huggingface_hub's allow_patterns); empty: all
  std::function<void(const FileProgress&)> progress;  // after each chunk written
};

// The options from the environment, as huggingface_hub reads it.
PullOptions pull_options_from_env();

struct PullResult {
  std::string commit;
  std::filesystem::path snapshot;
  size_t files = 0;            // files of the snapshot that matched
  size_t downloaded = 0;       // of them, fetched now (the rest were already in blobs/)
  uint64_t bytes_fetched = 0;  // bytes received now
};

// Throws std::runtime_error with the repo or file named: 401/403 says the repo is gated (accept its license
// on the model page, set HF_TOKEN), 404 that it or the revision does not exist, a hash mismatch that the
// download was corrupted (its partial file is removed, so a rerun starts afresh).
PullResult pull(const RepoRef& ref, const PullOptions& options);

}  // namespace ge::hub
