// Outputs that appear whole or not at all (write_atomically), and files that must not outlive an interrupted
// process: a temporary output being written (and renamed into place only when complete), or a finished output
// whose companion is still being written. While a guard lives, SIGINT, SIGTERM and SIGHUP first remove its
// file, then end the process as they would have. Without this, Ctrl-C during `gemma convert` would leave a
// half-written OUT.gguf.tmp behind.
#pragma once
#include <filesystem>
#include <functional>
#include <ostream>

namespace ge::formats {

class RemovalOnSignal {
 public:
  // Throws std::length_error when more than kMaxFiles guards are alive or the path is too long to keep
  // in the fixed storage a signal handler may read.
  explicit RemovalOnSignal(const std::filesystem::path& file);
  ~RemovalOnSignal();
  RemovalOnSignal(const RemovalOnSignal&) = delete;
  RemovalOnSignal& operator=(const RemovalOnSignal&) = delete;

  static constexpr int kMaxFiles = 8;

 private:
  int slot_;
};

// Writes path through path + ".tmp" and a rename, so a reader never sees a half-written file: on any
// exception (including one from `write`) or a terminating signal the temporary file is removed.
void write_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);

}  // namespace ge::formats
