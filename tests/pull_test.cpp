// `gemma pull` against a local stand-in for the Hugging Face hub (cpp-httplib on a free loopback port) that
// answers as the hub does: the model-info API with siblings and LFS hashes, resolve/<rev>/<file> redirecting
// LFS files to a CDN with X-Linked-Etag, ETag and X-Repo-Commit headers, Range requests. The cache it
// leaves equals what huggingface_hub writes; a cut-off download resumes; a corrupted one is refused; a gated
// repo says what to do.
#include "hub/pull.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <thread>

#include "hub/digest.h"
#include "hub/hf_cache.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRepo = "google/gemma-3-270m-it";
constexpr const char* kCommit = "c0ffee0123456789abcdef0123456789abcdef01";

struct RepoFile {
  std::string path;
  std::string bytes;
  bool lfs = false;
  std::string blob_id() const {
    hub::Digest d = hub::Digest::git_blob(bytes.size());
    d.update(bytes);
    return d.hex();
  }
  std::string sha256() const {
    hub::Digest d = hub::Digest::sha256();
    d.update(bytes);
    return d.hex();
  }
  std::string etag() const { return lfs ? sha256() : blob_id(); }  // what huggingface_hub names the blob
};

// The demo model's files as a hub repo: weights and tokenizer in LFS, the JSON files in git, and a file in a
// folder (its snapshot link climbs one level more).
std::vector<RepoFile> demo_repo() {
  std::vector<RepoFile> files;
  for (const auto& e : fs::directory_iterator(test::demo_model_dir())) {
    const auto bytes = test::read_bytes(e.path());
    const std::string name = e.path().filename().string();
    files.push_back({name, std::string(bytes.begin(), bytes.end()), !name.ends_with(".json")});
  }
  files.push_back({"docs/usage.md", "Run it with gemma run.\n", false});
  return files;
}

const RepoFile* named(const std::vector<RepoFile>& files, const std::string& path) {
  const auto it = std::find_if(files.begin(), files.end(), [&](const RepoFile& f) { return f.path == path; });
  return it == files.end() ? nullptr : &*it;
}

class FakeHub {
 public:
  explicit FakeHub(std::vector<RepoFile> files) : files_(std::move(files)) {
    server_.Get(R"(/api/models/([^/]+/[^/]+)/revision/([^/]+))",
                [this](const httplib::Request& req, httplib::Response& res) { model_info(req, res); });
    server_.Get(R"(/([^/]+/[^/]+)/resolve/([^/]+)/(.+))",
                [this](const httplib::Request& req, httplib::Response& res) { resolve(req, res); });
    server_.Get(R"(/cdn/([0-9a-f]+))",
                [this](const httplib::Request& req, httplib::Response& res) { cdn(req, res); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeHub() {
    server_.stop();
    thread_.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::vector<RepoFile>& files() const { return files_; }

  // Without "Authorization: Bearer <token>", files answer 401 as a gated repo's do (its model info is
  // public).
  std::string required_token;
  std::string cut_once;  // this LFS file's first download stops halfway, the connection closed
  std::string corrupt;   // this LFS file arrives with one byte changed
  std::vector<std::string> ranges() const {
    std::lock_guard lock(mutex_);
    return ranges_;
  }

 private:
  void model_info(const httplib::Request& req, httplib::Response& res) const {
    const std::string rev = req.matches[2];
    if (req.matches[1] != kRepo || (rev != "main" && rev != "v1" && rev != kCommit) ||
        req.get_param_value("blobs") != "true") {
      res.status = 404;
      res.set_content(R"({"error":"Revision Not Found"})", "application/json");
      return;
    }
    nlohmann::json siblings = nlohmann::json::array();
    for (const RepoFile& f : files_) {
      nlohmann::json s = {{"rfilename", f.path}, {"blobId", f.blob_id()}, {"size", f.bytes.size()}};
      if (f.lfs) s["lfs"] = {{"sha256", f.sha256()}, {"size", f.bytes.size()}, {"pointerSize", 134}};
      siblings.push_back(s);
    }
    res.set_content(nlohmann::json{{"id", kRepo}, {"sha", kCommit}, {"siblings", siblings}}.dump(),
                    "application/json");
  }

  void resolve(const httplib::Request& req, httplib::Response& res) {
    if (!required_token.empty() && req.get_header_value("Authorization") != "Bearer " + required_token) {
      res.status = 401;
      res.set_content(
          R"({"error":"Access to model google/gemma-3-270m-it is restricted. You must have access to it and be authenticated to access it. Please log in."})",
          "application/json");
      return;
    }
    const RepoFile* f = named(files_, req.matches[3]);
    if (req.matches[1] != kRepo || req.matches[2] != kCommit || !f) {
      res.status = 404;
      return;
    }
    res.set_header("X-Repo-Commit", kCommit);
    if (f->lfs) {  // the hub sends LFS files to its CDN, naming the blob in X-Linked-Etag
      res.set_header("X-Linked-Etag", "\"" + f->sha256() + "\"");
      res.set_header("X-Linked-Size", std::to_string(f->bytes.size()));
      res.set_header("ETag", "\"" + f->blob_id() + "\"");
      res.set_redirect("/cdn/" + f->sha256(), 302);
      return;
    }
    record_range(req);
    res.set_header("ETag", "\"" + f->blob_id() + "\"");
    res.set_content(f->bytes, "application/octet-stream");  // httplib answers a Range with 206
  }

  void cdn(const httplib::Request& req, httplib::Response& res) {
    const RepoFile* f = nullptr;
    for (const RepoFile& c : files_)
      if (c.lfs && c.sha256() == req.matches[1]) f = &c;
    if (!f) {
      res.status = 404;
      return;
    }
    record_range(req);
    if (f->path == cut_once) {
      cut_once.clear();
      const std::string bytes = f->bytes;
      res.set_content_provider(bytes.size(), "application/octet-stream",
                               [bytes](size_t offset, size_t, httplib::DataSink& sink) {
                                 sink.write(bytes.data() + offset, bytes.size() / 2 - offset);
                                 return false;  // the connection drops here
                               });
      return;
    }
    std::string bytes = f->bytes;
    if (f->path == corrupt) bytes[bytes.size() / 3] ^= 1;
    res.set_content(bytes, "application/octet-stream");
  }

  void record_range(const httplib::Request& req) {
    std::lock_guard lock(mutex_);
    if (req.has_header("Range")) ranges_.push_back(req.get_header_value("Range"));
  }

  std::vector<RepoFile> files_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mutex_;
  std::vector<std::string> ranges_;
};

// Every entry below the repo's folder: "path" for a file (with its content for refs), "path -> target" for a
// symlink.
std::set<std::string> tree(const fs::path& repo) {
  std::set<std::string> entries;
  for (const auto& e : fs::recursive_directory_iterator(repo)) {
    const std::string rel =
        e.path().lexically_relative(repo).string();  // fs::relative would follow the links
    if (e.is_symlink())
      entries.insert(rel + " -> " + fs::read_symlink(e.path()).string());
    else if (!e.is_regular_file())
      continue;
    else if (const auto bytes = test::read_bytes(e.path()); rel.starts_with("refs/"))
      entries.insert(rel + " = " + std::string(bytes.begin(), bytes.end()));
    else
      entries.insert(rel);
  }
  return entries;
}

// What huggingface_hub's snapshot_download leaves for `files` fetched at `ref`.
std::set<std::string> huggingface_hub_tree(const std::vector<RepoFile>& files,
                                           const std::string& ref = "main") {
  std::set<std::string> entries = {"refs/" + ref + " = " + kCommit};
  for (const RepoFile& f : files) {
    entries.insert("blobs/" + f.etag());
    std::string up = "../../";
    for (char c : f.path)
      if (c == '/') up += "../";
    entries.insert("snapshots/" + std::string(kCommit) + "/" + f.path + " -> " + up + "blobs/" + f.etag());
  }
  return entries;
}

struct PullFixture {
  test::ScratchDir dir;
  FakeHub hub{demo_repo()};
  fs::path cache() const { return dir.path() / "hub"; }
  fs::path repo() const { return cache() / "models--google--gemma-3-270m-it"; }
  hub::PullOptions options(std::vector<std::string> include = {}) const {
    hub::PullOptions o;
    o.endpoint = hub.endpoint();
    o.cache = cache();
    o.include = std::move(include);
    return o;
  }
  hub::PullResult pull(const std::string& name = kRepo, std::vector<std::string> include = {}) const {
    return hub::pull(*hub::parse_repo_ref(name), options(std::move(include)));
  }
};

TEST(Digest, KnownVectors) {
  hub::Digest sha = hub::Digest::sha256();
  sha.update("abc");
  EXPECT_EQ(sha.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  hub::Digest blob = hub::Digest::git_blob(6);  // git hash-object of "hello\n"
  blob.update("hello\n");
  EXPECT_EQ(blob.hex(), "ce013625030ba8dba906f756967f9e9ca394464a");
}

TEST(Pull, LaysOutTheCacheAsHuggingfaceHubDoesAndTheModelRuns) {
  const PullFixture f;
  const auto r = f.pull();
  EXPECT_EQ(r.commit, kCommit);
  EXPECT_EQ(r.files, f.hub.files().size());
  EXPECT_EQ(r.downloaded, f.hub.files().size());
  EXPECT_EQ(tree(f.repo()), huggingface_hub_tree(f.hub.files()));
  for (const RepoFile& file : f.hub.files()) {
    const auto bytes = test::read_bytes(f.repo() / "snapshots" / kCommit / file.path);
    EXPECT_EQ(std::string(bytes.begin(), bytes.end()), file.bytes) << file.path;
    EXPECT_TRUE(
        fs::exists(f.cache() / ".locks" / "models--google--gemma-3-270m-it" / (file.etag() + ".lock")));
  }
  EXPECT_TRUE(f.hub.ranges().empty());

  const auto again = f.pull();  // everything is in blobs/ already
  EXPECT_EQ(again.downloaded, 0u);
  EXPECT_EQ(again.bytes_fetched, 0u);

  const test::ScopedEnv env({{"HF_HUB_CACHE", f.cache().c_str()}});
  const auto run =
      test::run_gemma(std::string("run -m ") + kRepo + " --raw -p 'Once upon a time' -n 4 --temp 0");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("eval count:           4 token(s)"), std::string::npos) << run.output;
}

TEST(Pull, ATagIsWrittenAsARef) {
  const PullFixture f;
  f.pull(std::string(kRepo) + "@v1");
  EXPECT_EQ(tree(f.repo()), huggingface_hub_tree(f.hub.files(), "v1"));
}

TEST(Pull, ResumesAnInterruptedDownloadWithARangeRequest) {
  PullFixture f;
  f.hub.cut_once = "model.safetensors";
  const RepoFile& weights = *named(f.hub.files(), "model.safetensors");
  const fs::path incomplete = f.repo() / "blobs" / (weights.etag() + ".incomplete");
  const std::string error = test::error_of([&] { f.pull(); });
  EXPECT_NE(error.find("run the same command again to resume"), std::string::npos) << error;
  ASSERT_TRUE(fs::exists(incomplete));
  const uint64_t kept = fs::file_size(incomplete);
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, weights.bytes.size());
  EXPECT_FALSE(
      fs::exists(f.repo() / "snapshots" / kCommit / "model.safetensors"));  // nothing half-written shows
  EXPECT_FALSE(fs::exists(f.repo() / "refs" / "main"));

  uint64_t left = 0;  // of the files the first run did not finish
  for (const RepoFile& file : f.hub.files())
    if (!fs::exists(f.repo() / "blobs" / file.etag())) left += file.bytes.size();
  const auto r = f.pull();
  EXPECT_EQ(r.bytes_fetched, left - kept);
  const auto ranges = f.hub.ranges();
  EXPECT_NE(std::find(ranges.begin(), ranges.end(), "bytes=" + std::to_string(kept) + "-"), ranges.end());
  EXPECT_EQ(tree(f.repo()), huggingface_hub_tree(f.hub.files()));
}

TEST(Pull, RefusesACorruptedBlob) {
  PullFixture f;
  f.hub.corrupt = "model.safetensors";
  const std::string error = test::error_of([&] { f.pull(); });
  EXPECT_NE(error.find("model.safetensors: the download is corrupted: it has sha256 "), std::string::npos)
      << error;
  EXPECT_FALSE(fs::exists(f.repo() / "snapshots" / kCommit / "model.safetensors"));
  const RepoFile& weights = *named(f.hub.files(), "model.safetensors");
  EXPECT_FALSE(fs::exists(f.repo() / "blobs" / weights.etag()));
  EXPECT_FALSE(fs::exists(f.repo() / "blobs" / (weights.etag() + ".incomplete")));
}

TEST(Pull, IncludeFetchesOnlyTheMatchingFiles) {
  const PullFixture f;
  const auto r = f.pull(kRepo, {"*.json", "docs/"});
  std::vector<RepoFile> wanted;
  for (const RepoFile& file : f.hub.files())
    if (file.path.ends_with(".json") || file.path.starts_with("docs/")) wanted.push_back(file);
  EXPECT_EQ(r.files, wanted.size());
  EXPECT_EQ(tree(f.repo()), huggingface_hub_tree(wanted));
  EXPECT_NE(test::error_of([&] { f.pull(kRepo, {"*.bin"}); }).find("no file of the repo matches --include"),
            std::string::npos);
}

TEST(Pull, AnUnknownRevisionIsNamed) {
  const PullFixture f;
  const std::string error = test::error_of([&] { f.pull(std::string(kRepo) + "@nope"); });
  EXPECT_NE(error.find("HTTP 404: Revision Not Found"), std::string::npos) << error;
  EXPECT_NE(error.find("no repo google/gemma-3-270m-it with a revision 'nope'"), std::string::npos) << error;
}

// Through the binary, as a user meets it: HF_ENDPOINT, HF_HOME and HF_TOKEN from the environment.
TEST(Pull, AGatedRepoSaysToAcceptTheLicenseAndSetHfToken) {
  PullFixture f;
  f.hub.required_token = "hf_secret";
  const test::ScopedEnv env({{"HF_ENDPOINT", f.hub.endpoint().c_str()},
                             {"HF_HOME", f.dir.path().c_str()},
                             {"HF_HUB_CACHE", nullptr},
                             {"HUGGINGFACE_HUB_CACHE", nullptr},
                             {"HF_TOKEN", nullptr},
                             {"HF_TOKEN_PATH", nullptr}});
  auto r = test::run_gemma(std::string("pull ") + kRepo);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("HTTP 401: Access to model google/gemma-3-270m-it is restricted"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("accept its license on " + f.hub.endpoint() + "/google/gemma-3-270m-it"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("set HF_TOKEN"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(f.repo() / "snapshots" / kCommit / "config.json"));

  const test::ScopedEnv token({{"HF_TOKEN", "hf_secret"}});
  r = test::run_gemma(std::string("pull ") + kRepo);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(tree(f.repo()), huggingface_hub_tree(f.hub.files()));
}

}  // namespace
}  // namespace ge
