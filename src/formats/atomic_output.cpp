#include "formats/atomic_output.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>

namespace ge::formats {
namespace {

constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};

// A handler may only read memory that is never reallocated and flags it can read atomically.
struct Slot {
  volatile sig_atomic_t used = 0;
  volatile sig_atomic_t tree = 0;
  char path[PATH_MAX] = {};
};
std::array<Slot, RemovalOnSignal::kMaxFiles> slots;
std::array<struct sigaction, kSignals.size()> previous;
int live = 0;  // guarded by mutex(); handlers are installed while it is > 0
std::mutex& mutex() {
  static std::mutex m;
  return m;
}

// Deeper folders than this are left in place: the guarded trees (quantize's output folder) are flat, and the
// handler's stack use stays bounded.
constexpr int kMaxTreeDepth = 16;

bool is_dot_or_dot_dot(const char* name) {
  return name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0));
}

// Removes `name` in the directory `parent` with only async-signal-safe calls (std::filesystem and readdir
// may allocate): unlink it, and if it is a directory, empty it first. Entries are re-read from the start
// after each pass that removed something, because removing entries while reading a directory may make
// getdents skip some; a pass that removes nothing (entries we may not delete) ends the loop. Returns
// whether `name` is gone.
bool remove_tree_at(int parent, const char* name, int depth) {
  if (unlinkat(parent, name, 0) == 0) return true;
  if ((errno != EISDIR && errno != EPERM) || depth > kMaxTreeDepth) return false;
  const int dir = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return false;
  alignas(8) char buffer[2048];
  for (bool removed = true; removed;) {
    removed = false;
    lseek(dir, 0, SEEK_SET);
    for (ssize_t n; (n = getdents64(dir, buffer, sizeof buffer)) > 0;) {
      for (ssize_t at = 0; at < n;) {
        const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + at);
        at += entry->d_reclen;
        if (!is_dot_or_dot_dot(entry->d_name)) removed |= remove_tree_at(dir, entry->d_name, depth + 1);
      }
    }
  }
  close(dir);
  return unlinkat(parent, name, AT_REMOVEDIR) == 0;
}

void remove_and_reraise(int sig) {
  for (Slot& s : slots) {
    if (!s.used) continue;
    if (s.tree)
      remove_tree_at(AT_FDCWD, s.path, 0);
    else
      unlink(s.path);  // async-signal-safe, unlike std::filesystem
  }
  // End the process the way the signal would have, so the shell sees the real cause.
  signal(sig, SIG_DFL);
  raise(sig);
}

void install() {
  for (size_t i = 0; i < kSignals.size(); ++i) {
    struct sigaction action = {};
    action.sa_handler = remove_and_reraise;
    sigemptyset(&action.sa_mask);
    sigaction(kSignals[i], &action, &previous[i]);
  }
}

void restore() {
  for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &previous[i], nullptr);
}

}  // namespace

RemovalOnSignal::RemovalOnSignal(const std::filesystem::path& file, Target target) {
  const std::string path = std::filesystem::absolute(file).string();
  if (path.size() >= PATH_MAX) throw std::length_error(path + ": path too long");
  std::lock_guard lock(mutex());
  slot_ = 0;
  while (slot_ < kMaxFiles && slots[slot_].used) ++slot_;
  if (slot_ == kMaxFiles) throw std::length_error("RemovalOnSignal: more than 8 files pending at once");
  std::memcpy(slots[slot_].path, path.c_str(), path.size() + 1);
  slots[slot_].tree = target == Target::kTree;
  slots[slot_].used = 1;
  if (live++ == 0) install();
}

RemovalOnSignal::~RemovalOnSignal() {
  std::lock_guard lock(mutex());
  slots[slot_].used = 0;
  if (--live == 0) restore();
}

void write_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  const RemovalOnSignal interrupted(tmp);
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp.string() + ": cannot open for writing: " + std::strerror(errno));
    write(out);
    out.close();
    if (!out) throw std::runtime_error(tmp.string() + ": write failed: " + std::strerror(errno));
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;  // the original error is the one worth reporting
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

void write_declared_bytes(std::ostream& out, const std::filesystem::path& path, const std::string& tensor,
                          uint64_t nbytes, const std::function<void(std::ostream&)>& write) {
  const auto start = out.tellp();
  write(out);
  // The stream keeps no error code: errno is still the failed write's (ENOSPC for a full disk, say).
  if (!out)
    throw std::runtime_error(path.string() + ": write failed in tensor '" + tensor + "': " + std::strerror(errno));
  const auto written = static_cast<uint64_t>(out.tellp() - start);
  if (written != nbytes)
    throw std::runtime_error(path.string() + ": tensor '" + tensor + "': wrote " + std::to_string(written) +
                             " bytes, declared " + std::to_string(nbytes));
}

}  // namespace ge::formats
