// The small JSON files of a model folder from a stranger, each read by the loader that reads it in a real folder:
// model.safetensors.index.json (shards named by it), tokenizer_config.json (special tokens over a real
// tokenizer.json), generation_config.json (over a real config.json), preprocessor_config.json and
// processor_config.json. The input's first byte picks the file; the rest is its content.
#include "formats/safetensors.h"
#include "fuzz_input.h"
#include "loader/model_loader.h"
#include "runtime/image_processor.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;

// A folder per file, holding the real file (of the bundled model) that its loader reads beside it, if any.
fs::path folder(const char* name, const char* real_file = nullptr) {
  const fs::path dir = ge::fuzz::scratch_dir() / name;
  fs::create_directories(dir);
  if (real_file)
    fs::copy_file(fs::path(GE_MODELS_DIR) / "gemma3-tiny" / real_file, dir / real_file,
                  fs::copy_options::skip_existing);
  return dir;
}

// A shard the index may name: one F32 tensor "a" of 2 values.
void write_shard(const fs::path& dir) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header + std::string(8, '\0');
  std::ofstream(dir / "model-00001-of-00001.safetensors", std::ios::binary) << bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge;
  if (size == 0) return 0;
  static const fs::path index_dir = [] {
    const fs::path dir = folder("index");
    write_shard(dir);
    return dir;
  }();
  static const fs::path tokenizer_dir = folder("tokenizer", "tokenizer.json");
  static const fs::path generation_dir = folder("generation", "config.json");
  static const fs::path processor_dir = folder("processor");
  const auto write = [&](const fs::path& dir, const char* name) {
    return fuzz::write_input(data + 1, size - 1, dir.filename() / name);
  };
  try {
    switch (data[0] % 5) {
      case 0: {
        write(index_dir, "model.safetensors.index.json");
        const formats::SafetensorsCheckpoint checkpoint(index_dir);
        (void)checkpoint.all();
        break;
      }
      case 1: {
        write(tokenizer_dir, "tokenizer_config.json");
        const Tokenizer tokenizer = Tokenizer::load(tokenizer_dir);
        (void)tokenizer.decode(tokenizer.encode("<start_of_turn>user\nHi<end_of_turn>", true));
        break;
      }
      case 2:
        write(generation_dir, "generation_config.json");
        (void)loader::load_generation_defaults(generation_dir).answer_limit(10);
        break;
      default: {
        fs::remove(processor_dir / "preprocessor_config.json");
        fs::remove(processor_dir / "processor_config.json");
        write(processor_dir, data[0] % 5 == 3 ? "preprocessor_config.json" : "processor_config.json");
        (void)runtime::pan_and_scan_crops(1000, 300, runtime::load_image_processor_config(processor_dir));
        break;
      }
    }
  } catch (const std::exception&) {
  }
  return 0;
}
