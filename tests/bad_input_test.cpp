// The rows of the README's bad-input matrix that belong to no single reader: a full disk and a read-only
// output (on a tmpfs mounted for the test in a mount namespace of its own), weights that hold NaN or Inf, a
// model file that changes under a running process, and the limits a hostile file cannot exceed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>

#include "formats/safetensors.h"
#include "gguf_edit.h"
#include "kernels/thread_pool.h"
#include "loader/model_loader.h"
#include "nn/kv_cache.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// `gemma ARGS` with `dir` a fresh tmpfs mounted with `options` (e.g. "size=64k", "ro"), in a user and mount
// namespace of the test's own (no root needed, nothing outside changes). nullopt where this machine allows no
// such namespace. The output ends with "exit=CODE" and the names left in `dir`, one per line.
std::optional<test::GemmaRun> run_with_tmpfs(const fs::path& dir, const std::string& options, const std::string& args) {
  fs::create_directories(dir);
  const std::string script = "mount -t tmpfs -o " + options + " tmpfs " + quoted(dir) + " || exit 99; " +
                             GE_GEMMA_BIN + " " + args + " 2>&1 </dev/null; echo exit=\\$?; ls -A " + quoted(dir);
  test::GemmaRun r = test::run_shell("unshare --user --map-root-user --mount sh -c \"" + script + "\" 2>&1");
  if (r.exit_code != 0) return std::nullopt;  // unshare or mount refused
  const size_t at = r.output.rfind("exit=");
  if (at == std::string::npos) return std::nullopt;
  r.exit_code = std::stoi(r.output.substr(at + 5));
  return r;
}

// What is left in the tmpfs after the command: the lines after "exit=CODE".
std::string left_in_dir(const test::GemmaRun& r) {
  const size_t line = r.output.find('\n', r.output.rfind("exit="));
  return line == std::string::npos ? "" : r.output.substr(line + 1);
}

TEST(FullDisk, ConvertAndQuantizeNameTheErrorAndLeaveNothing) {
  test::ScratchDir scratch;
  const fs::path disk = scratch.path() / "disk";
  const auto convert = run_with_tmpfs(disk, "size=64k", "convert " + quoted(test::demo_model_dir()) + " -o " +
                                                            quoted(disk / "model.gguf") + " --outtype f32");
  if (!convert) GTEST_SKIP() << "this machine mounts no tmpfs in a user namespace (unshare -rm)";
  EXPECT_NE(convert->exit_code, 0) << convert->output;
  EXPECT_NE(convert->output.find("model.gguf.tmp: write failed"), std::string::npos) << convert->output;
  EXPECT_NE(convert->output.find("No space left on device"), std::string::npos) << convert->output;
  EXPECT_EQ(left_in_dir(*convert), "") << convert->output;

  const auto quantize = run_with_tmpfs(disk, "size=64k", "quantize " + quoted(test::demo_model_dir()) + " -o " +
                                                             quoted(disk / "model-4bit"));
  ASSERT_TRUE(quantize);
  EXPECT_NE(quantize->exit_code, 0) << quantize->output;
  EXPECT_NE(quantize->output.find("No space left on device"), std::string::npos) << quantize->output;
  EXPECT_EQ(left_in_dir(*quantize), "") << quantize->output;
}

TEST(ReadOnlyOutput, ConvertQuantizeAndLogitsNameThePathAndLeaveNothing) {
  test::ScratchDir scratch;
  const fs::path disk = scratch.path() / "disk";
  const std::string model = quoted(test::demo_model_dir());
  const auto convert = run_with_tmpfs(disk, "ro", "convert " + model + " -o " + quoted(disk / "model.gguf"));
  if (!convert) GTEST_SKIP() << "this machine mounts no tmpfs in a user namespace (unshare -rm)";
  EXPECT_NE(convert->exit_code, 0);
  EXPECT_NE(convert->output.find(disk.string() + "/model.gguf.tmp: cannot open for writing: Read-only file system"),
            std::string::npos)
      << convert->output;

  const auto quantize = run_with_tmpfs(disk, "ro", "quantize " + model + " -o " + quoted(disk / "model-4bit"));
  ASSERT_TRUE(quantize);
  EXPECT_NE(quantize->exit_code, 0);
  EXPECT_NE(quantize->output.find("model-4bit"), std::string::npos) << quantize->output;
  EXPECT_NE(quantize->output.find("Read-only file system"), std::string::npos) << quantize->output;

  const auto logits = run_with_tmpfs(disk, "ro", "logits -m " + model + " --ids 2,5 -o " + quoted(disk / "l.f32"));
  ASSERT_TRUE(logits);
  EXPECT_NE(logits->exit_code, 0);
  EXPECT_NE(logits->output.find("l.f32.tmp: cannot open for writing: Read-only file system"), std::string::npos)
      << logits->output;
  for (const auto* r : {&*convert, &*quantize, &*logits}) EXPECT_EQ(left_in_dir(*r), "") << r->output;
}

// The demo model with one value of `tensor` (a bf16 matrix) set to `bits`.
void poison(const fs::path& dir, const std::string& tensor, uint16_t bits) {
  fs::create_directories(dir);
  test::copy_files(test::demo_model_dir(), dir);
  const fs::path file = dir / "model.safetensors";
  auto bytes = test::read_bytes(file);
  const auto parts = test::split_safetensors(bytes);
  const size_t data_start = bytes.size() - parts.data.size();
  const size_t at = data_start + parts.header[tensor]["data_offsets"][0].get<size_t>() + 2 * 5;  // element 5
  std::memcpy(bytes.data() + at, &bits, 2);
  test::write_bytes(file, bytes);
}

// NaN and Inf weights: `convert` and `quantize` read every value and stop, naming the tensor and the element;
// the runtime does not scan the weights (they are mmapped, and read only as used), and the first NaN or
// infinite logit ends generation with an error.
TEST(NonFiniteWeights, ConvertAndQuantizeNameTheTensorAndRunNamesTheLogits) {
  const std::string tensor = "model.layers.0.mlp.up_proj.weight";
  for (const uint16_t bits : {uint16_t{0x7fc0}, uint16_t{0xff80}}) {  // bf16 NaN, -Inf
    test::ScratchDir dir;
    poison(dir.path(), tensor, bits);
    for (const auto& [command, out] : {std::pair{"convert", dir.path() / "out.gguf"},
                                       std::pair{"quantize", dir.path() / "out-4bit"}}) {
      const auto r = test::run_gemma(std::string(command) + " " + quoted(dir.path()) + " -o " + quoted(out));
      EXPECT_NE(r.exit_code, 0) << command;
      EXPECT_NE(r.output.find("tensor '" + tensor + "' holds a NaN or infinite value (element 5)"), std::string::npos)
          << r.output;
      EXPECT_FALSE(fs::exists(out));
      EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
    }

    const auto run = test::run_gemma("run -m " + quoted(dir.path()) + " --exact -p Hi -n 2");
    EXPECT_NE(run.exit_code, 0);
    EXPECT_NE(run.output.find("the model's logits are NaN or infinite"), std::string::npos) << run.output;
  }
}

// Runs `body` in a child process with its stderr in `err`; returns the wait status.
int run_in_child_capturing_stderr(const fs::path& err, const std::function<void()>& body) {
  return test::run_in_child([&] {
    const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDERR_FILENO);
    body();
  });
}

std::vector<float> last_logits(loader::LoadedModel& m, kernels::ThreadPool& pool) {
  auto cache = m.model->make_cache(16);
  std::vector<float> logits(static_cast<size_t>(m.model->shape().vocab_size));
  const std::vector<int32_t> ids = {2, 5, 9};
  m.model->forward(ids, 0, cache, pool, logits.data(), false);
  return logits;
}

// A mapped weight file cut short under a running process: its next read of a lost page ends it with an error
// that names the file, where it would otherwise die of SIGBUS ("Bus error").
TEST(ChangedModelFile, TruncatedWhileInUseEndsTheProcessNamingTheFile) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  const fs::path weights = dir.path() / "model.safetensors", err = dir.path() / "stderr";
  const int status = run_in_child_capturing_stderr(err, [&] {
    auto m = loader::load_model(dir.path(), 16);
    kernels::ThreadPool pool(1);
    (void)last_logits(m, pool);
    fs::resize_file(weights, 4096);  // as `cp other.safetensors model.safetensors` does first
    (void)last_logits(m, pool);
    _exit(0);  // not reached: the read above faults
  });
  ASSERT_TRUE(WIFEXITED(status)) << "died of signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::ifstream in(err);
  const std::string message((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(message.find("error: " + weights.string() + ": the file changed on disk while in use"), std::string::npos)
      << message;
}

// A file replaced by a rename (how `gemma pull`, the hub's tools and Ollama replace files) leaves a running
// process on the old one: the same logits before and after.
TEST(ChangedModelFile, ReplacedByARenameKeepsTheOldWeights) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  auto m = loader::load_model(dir.path(), 16);
  kernels::ThreadPool pool(1);
  const auto before = last_logits(m, pool);
  const fs::path other = dir.path() / "other.safetensors";
  poison(dir.path() / "poisoned", "model.embed_tokens.weight", 0x7fc0);
  fs::copy_file(dir.path() / "poisoned" / "model.safetensors", other);
  fs::rename(other, dir.path() / "model.safetensors");
  EXPECT_EQ(test::max_abs_diff(before, last_logits(m, pool)), 0.0f);
}

// Every JSON file `gemma run` reads from a folder, broken in turn: the error names the file.
TEST(BadJson, EachFileOfAFolderIsNamed) {
  for (const char* file : {"config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
                           "model.safetensors.index.json"}) {
    test::ScratchDir dir;
    test::copy_files(test::demo_model_dir(), dir.path());
    std::ofstream(dir.path() / file, std::ios::trunc) << "{\"vocab_size\": 26";
    const auto run = test::run_gemma("run -m " + quoted(dir.path()) + " -p Hi -n 1");
    EXPECT_NE(run.exit_code, 0) << file;
    EXPECT_NE(run.output.find(std::string(file) + ": invalid JSON"), std::string::npos) << run.output;
  }
}

TEST(UnknownModel, AGgufOfAnotherArchitectureIsNamed) {
  test::ScratchDir dir;
  const fs::path gguf = dir.path() / "model.gguf", llama = dir.path() / "llama.gguf";
  ASSERT_EQ(test::run_gemma("convert " + quoted(test::demo_model_dir()) + " -o " + quoted(gguf)).exit_code, 0);
  test::rewrite_gguf(gguf, llama, {{"general.architecture", formats::GgufValue(std::string("llama"))}});
  const auto run = test::run_gemma("run -m " + quoted(llama) + " -p Hi -n 1");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("general.architecture 'llama' is not supported"), std::string::npos) << run.output;
}

// Limits (README, "Limits"): each is an error naming the file and the value, before anything is sized by it.
TEST(Limits, SafetensorsShapesAndHeadersPastTheLimitsAreNamed) {
  test::ScratchDir dir;
  const fs::path file = dir.path() / "model.safetensors";
  const auto load_error = [&](const std::string& header, size_t data_bytes = 0) {
    test::write_bytes(file, test::join_safetensors(header, std::vector<char>(data_bytes)));
    return test::error_of([&] { formats::SafetensorsCheckpoint ckpt(dir.path()); });
  };
  // 2^62 x 4 f32 values: the element count wraps a 64-bit count; unchecked, the byte count would wrap to 0.
  EXPECT_NE(load_error(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})")
                .find("has more elements than a 64-bit count holds"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})")
                .find("needs ? bytes but data_offsets span 0"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4)
                .find("9 dimensions (at most 8)"),
            std::string::npos);
  std::vector<char> huge_header(8);
  const uint64_t claimed = 100'000'001;
  std::memcpy(huge_header.data(), &claimed, 8);
  test::write_bytes(file, huge_header);
  EXPECT_NE(test::error_of([&] { formats::SafetensorsCheckpoint ckpt(dir.path()); })
                .find("header length 100000001 is more than the 100000000 bytes a safetensors header may take"),
            std::string::npos);
}

TEST(Limits, ConfigCountsPastTheLimitsAreNamed) {
  test::ScratchDir dir;
  test::copy_files(test::demo_model_dir(), dir.path());
  auto config = test::read_json(dir.path() / "config.json");
  config["num_hidden_layers"] = 1025;
  std::ofstream(dir.path() / "config.json", std::ios::trunc) << config.dump();
  EXPECT_NE(test::error_of([&] { loader::load_model(dir.path(), 16); })
                .find("config.json: num_hidden_layers: 1025 is more than the 1024 this engine takes"),
            std::string::npos);
  config["num_hidden_layers"] = 4;
  config["hidden_size"] = int64_t{1} << 40;
  std::ofstream(dir.path() / "config.json", std::ios::trunc) << config.dump();
  EXPECT_NE(test::error_of([&] { loader::load_model(dir.path(), 16); })
                .find("hidden_size: 1099511627776 is more than the 16777216 this engine takes"),
            std::string::npos);
}

// Context x layers x heads is counted before the KV cache is allocated: past the machine's memory (or a
// 64-bit count) it is an error, not an allocation the OOM killer answers.
TEST(Limits, AContextPastTheMachinesMemoryIsRefusedBeforeAllocating) {
  const auto run = test::run_gemma("run --ctx 1000000000000 -p Hi -n 1");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("a KV cache of 1000000000000 positions needs"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("more than this machine's"), std::string::npos) << run.output;
  EXPECT_NE(test::error_of([] { nn::KVCache cache({int64_t{1} << 62}, int64_t{1} << 62, 64, 256); })
                .find("is too large to count"),
            std::string::npos);
}

}  // namespace
}  // namespace ge
