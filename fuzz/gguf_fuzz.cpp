// A GGUF file from a stranger: header, metadata of every type, tensor infos and offsets, then everything the
// loaders read from it (each family's config, the vocabulary) without running a model.
#include "formats/gguf.h"
#include "fuzz_input.h"
#include "loader/gguf_model.h"
#include "loader/mmproj.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge;
  const auto path = fuzz::write_input(data, size, "model.gguf");
  try {
    const formats::GgufFile file(path);
    for (const Tensor* t : file.all()) (void)t->nbytes;
    const auto arch = file.metadata().find<std::string>("general.architecture").value_or("");
    Tokenizer tokenizer = loader::tokenizer_from_gguf(file);
    (void)tokenizer.encode("Hello, world! <start_of_turn>", true);
    if (arch == "gemma3n") (void)loader::gemma3n_config_from_gguf(file);
    else if (arch == "gemma4") (void)loader::gemma4_config_from_gguf(file, tokenizer);
    else (void)loader::config_from_gguf(file);
  } catch (const std::exception&) {
  }
  return 0;
}
