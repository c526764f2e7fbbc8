// `gemma pull ORG/NAME[@REVISION] [--include PATTERN]...`: a Hugging Face repo into huggingface_hub's cache
// (src/hub/pull.h), after which `-m ORG/NAME` finds it. A progress bar per file on a terminal only.
#include "hub/pull.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/common.h"

namespace ge::cli {

namespace {

struct PullCliOptions {
  std::string repo;
  std::vector<std::string> include;
};

// Rewrites one line per file: name, bar, MB and rate, at most ten times a second; the line ends with the
// file.
class ProgressBar {
 public:
  void update(const hub::FileProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.file != file_) {
      file_ = p.file;
      start_ = now;
      first_done_ = p.done;
    } else if (p.done < p.total && now - last_ < std::chrono::milliseconds(100)) {
      return;
    }
    last_ = now;
    const double frac = p.total ? static_cast<double>(p.done) / static_cast<double>(p.total) : 1.0;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(p.done - first_done_) / seconds / 1e6 : 0.0;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    std::fprintf(stderr, "\r%-40.40s [%.*s%*s] %8.1f/%.1f MB %6.1f MB/s ", p.file.c_str(), filled,
                 "##############################", kWidth - filled, "", static_cast<double>(p.done) / 1e6,
                 static_cast<double>(p.total) / 1e6, rate);
    open_ = p.done != p.total;
    if (!open_) {
      std::fputc('\n', stderr);
      file_.clear();
    }
    std::fflush(stderr);
  }
  // Ends a line left open by a failed download, so the error starts on its own line.
  void close() {
    if (open_) std::fputc('\n', stderr);
  }

 private:
  std::string file_;
  std::chrono::steady_clock::time_point start_, last_;
  uint64_t first_done_ = 0;
  bool open_ = false;
};

void run_pull(const PullCliOptions& o) {
  const auto ref = hub::parse_repo_ref(o.repo);
  if (!ref) throw std::runtime_error(o.repo + ": not a Hugging Face repo id (ORG/NAME or ORG/NAME@REVISION)");
  hub::PullOptions options = hub::pull_options_from_env();
  options.include = o.include;
  auto bar = std::make_shared<ProgressBar>();
  if (isatty(STDERR_FILENO)) options.progress = [bar](const hub::FileProgress& p) { bar->update(p); };
  hub::PullResult r;
  try {
    r = hub::pull(*ref, options);
  } catch (...) {
    bar->close();
    throw;
  }
  std::fprintf(stderr, "%s: %zu file(s), %zu downloaded (%.1f MB), commit %s\n%s\n", ref->display().c_str(),
               r.files, r.downloaded, static_cast<double>(r.bytes_fetched) / 1e6, r.commit.c_str(),
               r.snapshot.c_str());
}

}  // namespace

void add_pull_command(CLI::App& app) {
  auto o = std::make_shared<PullCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "pull",
      "Download a Hugging Face repo into the Hugging Face cache (HF_HOME, HF_ENDPOINT, HF_TOKEN honoured)");
  cmd->add_option("repo", o->repo, "ORG/NAME or ORG/NAME@REVISION (a branch, tag or commit)")->required();
  cmd->add_option("--include", o->include,
                  "Only the files matching this shell pattern (repeatable), e.g. '*.json' or "
                  "'gemma-3-1b-it-Q4_K_M.gguf'");
  cmd->callback([o] { run_pull(*o); });
}

}  // namespace ge::cli
