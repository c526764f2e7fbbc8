// Model names: -m ORG/NAME[@REV] from a cache laid out as huggingface_hub lays it out, -m ollama:NAME[:TAG]
// from a store laid out as Ollama lays it out (manifest, blobs, a projector layer as the mmproj), the errors
// for names found in neither, `gemma list`, and `gemma serve` naming a model by its name.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <thread>

#include "hub/digest.h"
#include "hub/hf_cache.h"
#include "hub/model_location.h"
#include "hub/ollama_store.h"
#include "server/server.h"
#include "test_util.h"

namespace ge {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCommit = "0123456789abcdef0123456789abcdef01234567";
constexpr const char* kOtherCommit = "89abcdef0123456789abcdef0123456789abcdef";

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

std::string sha256_of(const fs::path& file) {
  return hub::file_digest(file, hub::Digest::sha256());
}

// A Hugging Face cache and an Ollama store in a scratch folder, which HF_HOME and OLLAMA_MODELS point to for
// this process and the gemma binaries it starts.
class Stores {
 public:
  Stores()
      : env_({{"HF_HOME", (dir_.path() / "hf").c_str()},
              {"OLLAMA_MODELS", (dir_.path() / "ollama").c_str()},
              {"HF_HUB_CACHE", nullptr},
              {"HUGGINGFACE_HUB_CACHE", nullptr}}) {}

  fs::path hf_cache() const { return dir_.path() / "hf" / "hub"; }
  fs::path ollama() const { return dir_.path() / "ollama"; }
  fs::path scratch() const { return dir_.path(); }

  // The files of `src` as repo `repo_id` at `commit`, as huggingface_hub stores them: each a blob named by
  // its hash, linked from the snapshot by a relative symlink; each of `refs` names the commit.
  void add_hf_repo(const std::string& repo_id, const std::string& commit, const fs::path& src,
                   const std::vector<std::string>& refs = {"main"}) const {
    const fs::path repo = hf_cache() / hub::repo_folder_name(repo_id);
    fs::create_directories(repo / "blobs");
    fs::create_directories(repo / "snapshots" / commit);
    for (const auto& e : fs::directory_iterator(src)) {
      const std::string blob = sha256_of(e.path());
      fs::copy_file(e.path(), repo / "blobs" / blob, fs::copy_options::overwrite_existing);
      fs::create_symlink(fs::path("../../blobs") / blob, repo / "snapshots" / commit / e.path().filename());
    }
    for (const std::string& ref : refs) {
      fs::create_directories(repo / "refs");
      std::ofstream(repo / "refs" / ref) << commit;
    }
  }

  // A manifest at manifests/registry.ollama.ai/<ns>/<model>/<tag> with a config, the model and (optionally)
  // projector layers, and a template layer a reader must pass over.
  void add_ollama_model(const std::string& ns, const std::string& model, const std::string& tag,
                        const fs::path& gguf, const fs::path& projector = {}) const {
    nlohmann::json layers = nlohmann::json::array();
    layers.push_back(layer("application/vnd.ollama.image.model", gguf));
    if (!projector.empty()) layers.push_back(layer("application/vnd.ollama.image.projector", projector));
    const fs::path template_file = scratch() / "template.txt";
    std::ofstream(template_file) << "{{ .Prompt }}";
    layers.push_back(layer("application/vnd.ollama.image.template", template_file));
    const fs::path config_file = scratch() / "config.json";
    std::ofstream(config_file) << R"({"model_format":"gguf","model_family":"gemma3"})";
    const nlohmann::json manifest = {
        {"schemaVersion", 2},
        {"mediaType", "application/vnd.docker.distribution.manifest.v2+json"},
        {"config", layer("application/vnd.docker.container.image.v1+json", config_file)},
        {"layers", layers}};
    const fs::path path = ollama() / "manifests" / "registry.ollama.ai" / ns / model / tag;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << manifest.dump();
  }

 private:
  nlohmann::json layer(const std::string& type, const fs::path& file) const {
    const std::string hex = sha256_of(file);
    fs::create_directories(ollama() / "blobs");
    fs::copy_file(file, ollama() / "blobs" / ("sha256-" + hex), fs::copy_options::overwrite_existing);
    return {{"mediaType", type}, {"digest", "sha256:" + hex}, {"size", fs::file_size(file)}};
  }

  test::ScratchDir dir_;
  test::ScopedEnv env_;
};

// The generated text of a `gemma run`: without the demo model's note and the statistics after it.
std::string answer(const std::string& output) {
  std::string text = output.substr(0, output.find("load duration"));
  if (text.starts_with("note:")) text.erase(0, text.find('\n') + 1);
  return text;
}

const std::string kPrompt = " --raw -p 'Once upon a time' -n 8 --temp 0";

fs::path converted_demo_gguf(const fs::path& dir) {
  const fs::path gguf = dir / "tiny.gguf";
  const auto r = test::run_gemma("convert " + quoted(test::demo_model_dir()) + " -o " + quoted(gguf));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return gguf;
}

TEST(HubNames, RepoIdsParseAsHuggingfaceHubValidatesThem) {
  const auto ref = hub::parse_repo_ref("google/gemma-3-1b-it");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->repo_id, "google/gemma-3-1b-it");
  EXPECT_EQ(ref->revision, "main");
  EXPECT_EQ(ref->display(), "google/gemma-3-1b-it");
  const auto pr = hub::parse_repo_ref("mlx-community/gemma-3-1b-it-4bit@refs/pr/1");
  ASSERT_TRUE(pr);
  EXPECT_EQ(pr->revision, "refs/pr/1");
  EXPECT_EQ(pr->display(), "mlx-community/gemma-3-1b-it-4bit@refs/pr/1");
  for (const char* bad : {"gemma-3-1b-it", "/abs/path", "a/b/c", "./model", "org/..", "org/-name",
                          "org/na--me", "org/name@", "org/name@../x", "org/name@/x", "org/na me"})
    EXPECT_FALSE(hub::parse_repo_ref(bad)) << bad;
  EXPECT_EQ(hub::repo_folder_name("google/gemma-3-1b-it"), "models--google--gemma-3-1b-it");
}

TEST(HubNames, OllamaNamesParseAsOllamaReadsThem) {
  const auto plain = hub::parse_ollama_name("gemma3");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->manifest("S"), fs::path("S/manifests/registry.ollama.ai/library/gemma3/latest"));
  EXPECT_EQ(plain->display(), "gemma3:latest");
  const auto tagged = hub::parse_ollama_name("gemma3:1b");
  ASSERT_TRUE(tagged);
  EXPECT_EQ(tagged->manifest("S"), fs::path("S/manifests/registry.ollama.ai/library/gemma3/1b"));
  const auto user = hub::parse_ollama_name("someone/tiny-gemma:q8");
  ASSERT_TRUE(user);
  EXPECT_EQ(user->manifest("S"), fs::path("S/manifests/registry.ollama.ai/someone/tiny-gemma/q8"));
  EXPECT_EQ(user->display(), "someone/tiny-gemma:q8");
  const auto hosted = hub::parse_ollama_name("hf.co/org/model:Q4_K_M");
  ASSERT_TRUE(hosted);
  EXPECT_EQ(hosted->manifest("S"), fs::path("S/manifests/hf.co/org/model/Q4_K_M"));
  for (const char* bad : {"", "gemma3:", "a/b/c/d", "../x", "ge mma"})
    EXPECT_FALSE(hub::parse_ollama_name(bad)) << bad;
}

TEST(HubNames, CacheFolderFollowsHuggingfaceHubsOrder) {
  const test::ScopedEnv env({{"HF_HUB_CACHE", "/c1"},
                             {"HUGGINGFACE_HUB_CACHE", "/c2"},
                             {"HF_HOME", "/h"},
                             {"XDG_CACHE_HOME", "/x"},
                             {"HOME", "/home/u"}});
  EXPECT_EQ(hub::hf_cache_dir(), fs::path("/c1"));
  ::unsetenv("HF_HUB_CACHE");
  EXPECT_EQ(hub::hf_cache_dir(), fs::path("/c2"));
  ::unsetenv("HUGGINGFACE_HUB_CACHE");
  EXPECT_EQ(hub::hf_cache_dir(), fs::path("/h/hub"));
  ::unsetenv("HF_HOME");
  EXPECT_EQ(hub::hf_cache_dir(), fs::path("/x/huggingface/hub"));
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(hub::hf_cache_dir(), fs::path("/home/u/.cache/huggingface/hub"));
}

TEST(HfCache, RunLoadsARepoByNameBranchTagAndCommit) {
  const Stores stores;
  stores.add_hf_repo("google/gemma-3-270m-it", kCommit, test::demo_model_dir(), {"main", "v1"});
  const auto expected = test::run_gemma("run -m " + quoted(test::demo_model_dir()) + kPrompt);
  ASSERT_EQ(expected.exit_code, 0) << expected.output;
  for (const std::string& name :
       {std::string("google/gemma-3-270m-it"), std::string("google/gemma-3-270m-it@v1"),
        "google/gemma-3-270m-it@" + std::string(kCommit)}) {
    const auto r = test::run_gemma("run -m " + name + kPrompt);
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.output;
    EXPECT_EQ(answer(r.output), answer(expected.output)) << name;
  }
  const auto where = hub::locate_model("google/gemma-3-270m-it@v1");
  EXPECT_EQ(where.path, stores.hf_cache() / "models--google--gemma-3-270m-it" / "snapshots" / kCommit);
  EXPECT_EQ(where.name, "google/gemma-3-270m-it@v1");
}

// tokenize, logits, bench, inspect, convert and quantize take the name as run does.
TEST(HfCache, EveryCommandTakesAName) {
  const Stores stores;
  stores.add_hf_repo("google/gemma-3-270m-it", kCommit, test::demo_model_dir());
  const std::string name = "google/gemma-3-270m-it";
  const fs::path out = stores.scratch() / "out";
  for (const std::string& args :
       {"tokenize -m " + name + " hello", "logits -m " + name + " --ids 2,3 -o " + quoted(out / "l.f32"),
        "bench -m " + name + " -p 4 -n 2 -r 1", "inspect " + name,
        "convert " + name + " -o " + quoted(out / "m.gguf"),
        "quantize " + name + " -o " + quoted(out / "q4")}) {
    fs::create_directories(out);
    const auto r = test::run_gemma(args);
    EXPECT_EQ(r.exit_code, 0) << args << ": " << r.output;
  }
}

TEST(HfCache, ARepoOfGgufFilesIsItsGgufFile) {
  const Stores stores;
  const fs::path src = stores.scratch() / "gguf-repo";
  fs::create_directories(src);
  fs::rename(converted_demo_gguf(stores.scratch()), src / "tiny-Q8_0.gguf");
  std::ofstream(src / "README.md") << "a GGUF repo";
  stores.add_hf_repo("someone/tiny-GGUF", kCommit, src);
  const auto r = test::run_gemma("run -m someone/tiny-GGUF" + kPrompt);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval count:           8 token(s)"), std::string::npos) << r.output;

  fs::copy_file(src / "tiny-Q8_0.gguf", src / "tiny-F16.gguf");
  stores.add_hf_repo("someone/two-GGUF", kOtherCommit, src);
  const auto two = test::run_gemma("run -m someone/two-GGUF" + kPrompt);
  EXPECT_NE(two.exit_code, 0);
  EXPECT_NE(two.output.find("several GGUF files"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("tiny-F16.gguf"), std::string::npos) << two.output;
}

TEST(HfCache, AnUnknownNameSaysWhereItLookedAndHowToGetIt) {
  const Stores stores;
  stores.add_hf_repo("google/gemma-3-270m-it", kCommit, test::demo_model_dir());
  auto r = test::run_gemma("run -m google/no-such-model -p hi");
  EXPECT_NE(r.exit_code, 0);
  const fs::path repo = stores.hf_cache() / "models--google--no-such-model";
  EXPECT_NE(r.output.find("google/no-such-model: no such file or folder, and not in the Hugging Face cache"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find((repo / "refs" / "main").string()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gemma pull google/no-such-model"), std::string::npos) << r.output;

  r = test::run_gemma("run -m google/gemma-3-270m-it@" + std::string(kOtherCommit) + " -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("models--google--gemma-3-270m-it/snapshots/" + std::string(kOtherCommit)),
            std::string::npos)
      << r.output;
}

// A folder that exists is loaded even where its path also reads as a repo id that the cache holds.
TEST(HfCache, AnExistingPathWinsOverAName) {
  const Stores stores;
  stores.add_hf_repo("google/gemma-3-270m-it", kCommit, test::demo_model_dir());
  const fs::path local = stores.scratch() / "google" / "gemma-3-270m-it";
  fs::create_directories(local);
  const fs::path cwd = fs::current_path();
  fs::current_path(stores.scratch());
  const auto where = hub::locate_model("google/gemma-3-270m-it");
  fs::current_path(cwd);
  EXPECT_EQ(where.path, fs::path("google/gemma-3-270m-it"));
  EXPECT_EQ(where.name, "");
}

TEST(Ollama, RunLoadsTheModelLayer) {
  const Stores stores;
  const fs::path gguf = converted_demo_gguf(stores.scratch());
  stores.add_ollama_model("library", "tiny", "latest", gguf);
  stores.add_ollama_model("someone", "tiny", "q8", gguf);
  const auto expected = test::run_gemma("run -m " + quoted(gguf) + kPrompt);
  ASSERT_EQ(expected.exit_code, 0) << expected.output;
  for (const char* name : {"ollama:tiny", "ollama:tiny:latest", "ollama:someone/tiny:q8"}) {
    const auto r = test::run_gemma(std::string("run -m ") + name + kPrompt);
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.output;
    EXPECT_EQ(answer(r.output), answer(expected.output)) << name;
  }
}

// The projector layer is the model's mmproj: an image reaches the model without --mmproj.
TEST(Ollama, TheProjectorLayerIsTheMmproj) {
  const Stores stores;
  const fs::path vision = test::data_dir() / "gemma3-tiny-vision";
  const fs::path text = stores.scratch() / "text.gguf", mmproj = stores.scratch() / "mmproj.gguf";
  const auto c = test::run_gemma("convert " + quoted(vision) + " -o " + quoted(text) +
                                 " --outtype f32 --mmproj " + quoted(mmproj));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  stores.add_ollama_model("library", "tiny-vision", "latest", text, mmproj);
  std::string ids;
  for (const int id : test::read_json(vision / "reference.json")["token_ids"].get<std::vector<int>>())
    ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const fs::path out = stores.scratch() / "logits.f32";
  const auto r = test::run_gemma("logits --exact -m ollama:tiny-vision --ids " + ids + " --image " +
                                 quoted(vision / "reference_image.png") + " -o " + quoted(out) + " -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto got = test::read_f32(out), expected = test::read_f32(vision / "reference_logits.f32");
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_LT(test::max_abs_diff(got.data(), expected.data(), got.size()), 1e-3f);
}

TEST(Ollama, AnUnknownNameSaysWhereItLooked) {
  const Stores stores;
  const auto r = test::run_gemma("run -m ollama:gemma3:1b -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("ollama:gemma3:1b: not in Ollama's store"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find((stores.ollama() / "manifests/registry.ollama.ai/library/gemma3/1b").string()),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("ollama pull gemma3:1b"), std::string::npos) << r.output;
}

TEST(Ollama, AManifestWithAMissingBlobIsNamed) {
  const Stores stores;
  const fs::path gguf = converted_demo_gguf(stores.scratch());
  stores.add_ollama_model("library", "tiny", "latest", gguf);
  fs::remove(stores.ollama() / "blobs" / ("sha256-" + sha256_of(gguf)));
  const auto r = test::run_gemma("run -m ollama:tiny -p hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("registry.ollama.ai/library/tiny/latest: its layer sha256:"), std::string::npos)
      << r.output;
}

TEST(List, ShowsBothStoresWithSizeFamilyAndDtype) {
  const Stores stores;
  stores.add_hf_repo("google/gemma-3-270m-it", kCommit, test::demo_model_dir(), {"main", "v1"});
  const fs::path gguf = converted_demo_gguf(stores.scratch());
  stores.add_ollama_model("library", "tiny", "q8", gguf);
  const auto r = test::run_gemma("list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto row = [&](const std::string& name) {
    const auto at = r.output.find(name + " ");
    return at == std::string::npos ? std::string() : r.output.substr(at, r.output.find('\n', at) - at);
  };
  const std::string hf = row("google/gemma-3-270m-it"), tagged = row("google/gemma-3-270m-it@v1");
  EXPECT_NE(hf.find("gemma3_text"), std::string::npos) << r.output;
  EXPECT_NE(hf.find("bfloat16"), std::string::npos) << r.output;
  EXPECT_NE(hf.find(" 1.0 MB"), std::string::npos) << r.output;  // config, weights and tokenizer files
  EXPECT_FALSE(tagged.empty()) << r.output;
  const std::string ollama = row("ollama:tiny:q8");
  EXPECT_NE(ollama.find("gemma3"), std::string::npos) << r.output;
  EXPECT_NE(ollama.find("BF16"), std::string::npos) << r.output;

  const test::ScopedEnv empty({{"HF_HOME", (stores.scratch() / "none").c_str()},
                               {"OLLAMA_MODELS", (stores.scratch() / "none").c_str()}});
  const auto none = test::run_gemma("list");
  EXPECT_EQ(none.exit_code, 0) << none.output;
  EXPECT_NE(none.output.find("no models in"), std::string::npos) << none.output;
}

// `gemma serve -m NAME`: clients ask for the model by that name.
TEST(Serve, NamesAModelByItsRepoIdOrOllamaName) {
  const Stores stores;
  stores.add_hf_repo("google/gemma-3-270m-it", kCommit, test::demo_model_dir());
  stores.add_ollama_model("library", "tiny", "latest", converted_demo_gguf(stores.scratch()));
  server::ServerOptions options;
  options.port = 0;
  options.threads = 1;
  server::Server server(options,
                        {hub::locate_model("google/gemma-3-270m-it"), hub::locate_model("ollama:tiny")});
  std::atomic<int> port{0};
  std::thread serving([&] { server.run([&](int p) { port = p; }); });
  for (int i = 0; i < 600 && port == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  for (int i = 0; i < 300; ++i) {
    if (auto h = c.Get("/health"); h && h->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto tags = c.Get("/api/tags");
  ASSERT_TRUE(tags);
  EXPECT_NE(tags->body.find("\"google/gemma-3-270m-it\""), std::string::npos) << tags->body;
  EXPECT_NE(tags->body.find("\"tiny:latest\""), std::string::npos) << tags->body;
  for (const char* name : {"google/gemma-3-270m-it", "tiny", "tiny:latest"}) {
    const nlohmann::json body = {{"model", name},
                                 {"prompt", "hi"},
                                 {"stream", false},
                                 {"options", {{"num_predict", 2}, {"temperature", 0}}}};
    const auto r = c.Post("/api/generate", body.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << name << ": " << r->body;
  }
  server.shutdown();
  serving.join();
}

}  // namespace
}  // namespace ge
