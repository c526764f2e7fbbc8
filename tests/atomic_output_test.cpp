// An interrupted write leaves nothing behind: Ctrl-C (SIGINT) or SIGTERM in the middle of writing a GGUF
// removes the temporary file, and the process still dies of that signal. Each case runs in a forked child
// that interrupts itself at a known point, so the test does not depend on timing.
#include "formats/atomic_output.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "formats/gguf.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

// A writer of one 1 MiB tensor that signals itself after writing half of it.
void write_and_interrupt(const fs::path& out, int sig) {
  formats::GgufWriter w;
  w.add("general.architecture", std::string("test"));
  w.add_tensor("t", DType::F32, {512, 512});
  w.write(out, [sig](size_t, std::ostream& o) {
    const std::vector<char> half(512 * 512 * 2, 'x');
    o.write(half.data(), static_cast<std::streamsize>(half.size()));
    o.flush();
    raise(sig);
    o.write(half.data(), static_cast<std::streamsize>(half.size()));
  });
}

class InterruptedWrite : public ::testing::TestWithParam<int> {};

TEST_P(InterruptedWrite, LeavesNoFileAndDiesOfTheSignal) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "model.gguf";
  const int status = test::run_in_child([&] { write_and_interrupt(out, GetParam()); });
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), GetParam());
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

INSTANTIATE_TEST_SUITE_P(Signals, InterruptedWrite, ::testing::Values(SIGINT, SIGTERM));

// The control group: without the guard the same interruption leaves the half-written file behind.
TEST(InterruptedWriteControl, WithoutAGuardTheHalfFileStays) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "half.bin";
  const int status = test::run_in_child([&] {
    std::ofstream o(out, std::ios::binary);
    o << "half";
    o.flush();
    raise(SIGINT);
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs::exists(out));
}

TEST(RemovalOnSignal, RestoresThePreviousHandlersWhenTheLastGuardEnds) {
  struct sigaction before = {};
  sigaction(SIGINT, nullptr, &before);
  {
    test::ScratchDir dir;
    const formats::RemovalOnSignal a(dir.path() / "a");
    const formats::RemovalOnSignal b(dir.path() / "b");
    struct sigaction during = {};
    sigaction(SIGINT, nullptr, &during);
    EXPECT_NE(during.sa_handler, before.sa_handler);
  }
  struct sigaction after = {};
  sigaction(SIGINT, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

// A completed file is not removed by a signal that comes after its guard ended.
TEST(RemovalOnSignal, AFinishedWriteIsKept) {
  test::ScratchDir dir;
  const fs::path out = dir.path() / "done.gguf";
  const int status = test::run_in_child([&] {
    formats::GgufWriter w;
    w.add("general.architecture", std::string("test"));
    w.write(out, [](size_t, std::ostream&) {});
    raise(SIGINT);
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs::exists(out));
}

}  // namespace
}  // namespace ge
