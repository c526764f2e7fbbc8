// Outputs that appear whole or not at all (write_atomically), and files that must not outlive an interrupted
// process: a temporary output being written (and renamed into place only when complete), or a finished output
// whose companion is still being written. While a guard lives, SIGINT, SIGTERM and SIGHUP first remove its
// file (or, for a kTree guard, its directory and everything in it), then end the process as they would have.
// Without this, Ctrl-C during `gemma convert` would leave a half-written OUT.gguf.tmp behind, and Ctrl-C
// during `gemma quantize` a half-written OUT_DIR.tmp folder.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace ge::formats {

class RemovalOnSignal {
 public:
  // kFile: the path is unlinked (a file, or a symlink itself). kTree: a directory is removed with all it
  // contains (symlinks inside are removed, never followed); a file at the path is unlinked as with kFile.
  enum class Target { kFile, kTree };

  // Throws std::length_error when more than kMaxFiles guards are alive or the path is too long to keep
  // in the fixed storage a signal handler may read.
  explicit RemovalOnSignal(const std::filesystem::path& file, Target target = Target::kFile);
  ~RemovalOnSignal();
  RemovalOnSignal(const RemovalOnSignal&) = delete;
  RemovalOnSignal& operator=(const RemovalOnSignal&) = delete;

  static constexpr int kMaxFiles = 8;

 private:
  int slot_;
};

// Calls write(out) for one tensor of a file being written to `path` and checks that it wrote exactly
// `nbytes` bytes, failing with the file and tensor named: a writer that emits another size than it declared
// in the header would leave a file whose offsets lie.
void write_declared_bytes(std::ostream& out, const std::filesystem::path& path, const std::string& tensor,
                          uint64_t nbytes, const std::function<void(std::ostream&)>& write);

// Writes path through path + ".tmp" and a rename, so a reader never sees a half-written file: on any
// exception (including one from `write`) or a terminating signal the temporary file is removed.
void write_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);

}  // namespace ge::formats
