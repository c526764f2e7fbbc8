#include "formats/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace ge::formats {

namespace {

// A mapped file whose pages vanish (truncated, or rewritten in place by a program that truncates it first, as cp
// does) raises SIGBUS at the next read of them, and the process would die with "Bus error" and no name. The
// mappings are kept here, in storage a signal handler may read, so that the handler can name the file.
struct Mapping {
  std::atomic<const std::byte*> begin{nullptr};  // null: a free slot
  std::atomic<size_t> size{0};
  std::array<char, 1024> path{};
};
std::array<Mapping, 256> g_mappings;
std::mutex g_mappings_mutex;
struct sigaction g_previous_sigbus {};

void write_stderr(const char* text) {
  for (size_t n = std::strlen(text); n > 0;) {
    const ssize_t written = ::write(STDERR_FILENO, text, n);
    if (written <= 0) return;
    text += written;
    n -= static_cast<size_t>(written);
  }
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto* address = static_cast<const std::byte*>(info->si_addr);
  for (const Mapping& m : g_mappings) {
    const std::byte* begin = m.begin.load(std::memory_order_acquire);
    if (begin == nullptr || address < begin || address >= begin + m.size.load(std::memory_order_relaxed)) continue;
    write_stderr("error: ");
    write_stderr(m.path.data());
    write_stderr(": the file changed on disk while in use (truncated or rewritten in place); run the command again. "
                 "Replace a model's files by renaming new ones over them: running processes keep the old ones.\n");
    _exit(1);
  }
  // Not a mapped file's page: the signal does what it did before this handler.
  sigaction(SIGBUS, &g_previous_sigbus, nullptr);
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    if (g_previous_sigbus.sa_sigaction) g_previous_sigbus.sa_sigaction(sig, info, context);
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
  }
  // With the default action restored, returning re-runs the faulting read, which then ends the process.
}

void register_mapping(const std::byte* data, size_t size, const std::filesystem::path& path) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &g_previous_sigbus);
  });
  std::lock_guard lock(g_mappings_mutex);
  for (Mapping& m : g_mappings) {
    if (m.begin.load(std::memory_order_relaxed) != nullptr) continue;
    const std::string name = path.string();
    const size_t n = std::min(name.size(), m.path.size() - 1);
    std::memcpy(m.path.data(), name.data(), n);
    m.path[n] = '\0';
    m.size.store(size, std::memory_order_relaxed);
    m.begin.store(data, std::memory_order_release);
    return;
  }
  // More mappings than slots: this one's SIGBUS goes unnamed, as it would without the handler.
}

void unregister_mapping(const std::byte* data) {
  std::lock_guard lock(g_mappings_mutex);
  for (Mapping& m : g_mappings)
    if (m.begin.load(std::memory_order_relaxed) == data) m.begin.store(nullptr, std::memory_order_release);
}

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path, bool populate) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path.string() + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    // MAP_POPULATE maps every page now (as llama.cpp does): otherwise the first forward pass pays ~130k
    // page faults for a 0.5 GB model and the first prompt runs 8x slower (measured on gemma3-270m).
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw std::runtime_error(path.string() + ": mmap failed: " + std::strerror(errno));
    }
    data_ = static_cast<const std::byte*>(p);
    register_mapping(data_, size_, path);
  }
  ::close(fd);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile::~MappedFile() {
  if (!data_) return;
  unregister_mapping(data_);
  ::munmap(const_cast<std::byte*>(data_), size_);
}

namespace {

// madvise over the pages [data, data + n) touches (outward) or those wholly inside it; -1 for none.
int advise_pages(const std::byte* data, size_t n, int advice, bool outward) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<uintptr_t>(data), last = first + n;
  const uintptr_t begin = (outward ? first : first + page - 1) & ~(page - 1);
  const uintptr_t end = (outward ? last + page - 1 : last) & ~(page - 1);
  return end > begin ? madvise(reinterpret_cast<void*>(begin), end - begin, advice) : -1;
}

}  // namespace

void release_pages(const std::byte* data, size_t n) { advise_pages(data, n, MADV_DONTNEED, true); }

void advise_random_access(const std::byte* data, size_t n) { advise_pages(data, n, MADV_RANDOM, false); }

void populate_pages(const std::byte* data, size_t n) {
#ifdef MADV_POPULATE_READ
  if (advise_pages(data, n, MADV_POPULATE_READ, true) == 0) return;
#endif
  // Kernels before 5.14: read ahead, then touch one byte per page.
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  advise_pages(data, n, MADV_WILLNEED, true);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + n;
  volatile std::byte sink{};
  for (uintptr_t p = begin; p < end; p += page) sink = *reinterpret_cast<const std::byte*>(p);
  (void)sink;
}

}  // namespace ge::formats
