// Helpers shared by the tests: fixture paths, raw f32 files, scratch folders, error messages.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <cstdio>
#include <functional>
#include <random>
#include <fstream>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace ge::test {

inline std::filesystem::path data_dir() { return GE_TEST_DATA; }
inline std::filesystem::path demo_model_dir() { return std::filesystem::path(GE_MODELS_DIR) / "gemma3-tiny"; }

// Weights, config and tokenizer of a fixture (the bundled demo model for gemma3-tiny).
inline std::filesystem::path fixture_model_dir(const std::string& name) {
  return name == "gemma3-tiny" ? demo_model_dir() : data_dir() / name;
}
inline std::filesystem::path fixture_reference_dir(const std::string& name) { return data_dir() / name; }

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

inline std::vector<float> read_f32(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

inline std::vector<char> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A fresh, empty folder under the system temp dir, removed when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("gemma-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

// Copies every file of `from` into `to` (shallow, files only).
inline void copy_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  for (const auto& e : std::filesystem::directory_iterator(from))
    if (e.is_regular_file())
      std::filesystem::copy_file(e.path(), to / e.path().filename(), std::filesystem::copy_options::overwrite_existing);
}

// A safetensors file as its JSON header and its data section, to make lying files from good ones.
struct SafetensorsParts {
  nlohmann::json header;
  std::vector<char> data;
};

inline SafetensorsParts split_safetensors(const std::vector<char>& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + static_cast<std::ptrdiff_t>(n)),
          std::vector<char>(file.begin() + 8 + static_cast<std::ptrdiff_t>(n), file.end())};
}

inline std::vector<char> join_safetensors(const std::string& header, const std::vector<char>& data) {
  std::vector<char> out(8);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Rewrites the header of the safetensors file at `path` through `edit`, keeping the data as it is.
template <class Edit>
void edit_safetensors_header(const std::filesystem::path& path, Edit&& edit) {
  auto parts = split_safetensors(read_bytes(path));
  edit(parts.header);
  write_bytes(path, join_safetensors(parts.header.dump(), parts.data));
}

// Sets (or, with nullptr, unsets) environment variables for the life of the object, then restores them: the
// gemma binaries these tests start inherit them (HF_HOME, OLLAMA_MODELS, HF_ENDPOINT, ...).
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
      value ? ::setenv(name, value, 1) : ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it)
      it->second ? ::setenv(it->first.c_str(), it->second->c_str(), 1) : ::unsetenv(it->first.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// Runs `fn` and returns the message of what it throws, "(no error)" when it throws nothing.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// The `gemma` binary run with `args` (a shell command line's arguments) and stdin from `stdin_file`.
struct GemmaRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// A shell command line run to its end: its stdout (and whatever it sends there) and exit code.
inline GemmaRun run_shell(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  GemmaRun r{-1, ""};
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline GemmaRun run_gemma(const std::string& args, const std::string& stdin_file = "/dev/null") {
  return run_shell(std::string(GE_GEMMA_BIN) + " " + args + " 2>&1 <" + stdin_file);
}

// The same numbers for a seed as every other test: n values drawn from N(0, sigma^2).
inline std::vector<float> normal_values(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// The same numbers for a seed as every other test: n values drawn uniformly from [-1, 1).
inline std::vector<float> uniform_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// Runs `body` in a child process and returns its wait status (for tests of signals and exits).
inline int run_in_child(const std::function<void()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// NaN anywhere makes the result NaN, which fails every bound (std::max would silently drop it).
inline float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) {
    const float d = std::abs(a[i] - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

// The same over two whole vectors, which must be as long (a failure otherwise).
inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return max_abs_diff(a.data(), b.data(), std::min(a.size(), b.size()));
}

}  // namespace ge::test
