#include "formats/atomic_output.h"

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
  char path[PATH_MAX] = {};
};
std::array<Slot, RemovalOnSignal::kMaxFiles> slots;
std::array<struct sigaction, kSignals.size()> previous;
int live = 0;  // guarded by mutex(); handlers are installed while it is > 0
std::mutex& mutex() {
  static std::mutex m;
  return m;
}

void remove_and_reraise(int sig) {
  for (Slot& s : slots)
    if (s.used) unlink(s.path);  // async-signal-safe, unlike std::filesystem
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

RemovalOnSignal::RemovalOnSignal(const std::filesystem::path& file) {
  const std::string path = std::filesystem::absolute(file).string();
  if (path.size() >= PATH_MAX) throw std::length_error(path + ": path too long");
  std::lock_guard lock(mutex());
  slot_ = 0;
  while (slot_ < kMaxFiles && slots[slot_].used) ++slot_;
  if (slot_ == kMaxFiles) throw std::length_error("RemovalOnSignal: more than 8 files pending at once");
  std::memcpy(slots[slot_].path, path.c_str(), path.size() + 1);
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
    if (!out) throw std::runtime_error(tmp.string() + ": cannot open for writing");
    write(out);
    out.close();
    if (!out) throw std::runtime_error(tmp.string() + ": write failed");
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;  // the original error is the one worth reporting
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace ge::formats
