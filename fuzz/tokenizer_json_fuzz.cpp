// A tokenizer.json from a stranger, then encoding and decoding with whatever it describes.
#include "fuzz_input.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge;
  std::filesystem::remove(fuzz::scratch_dir() / "tokenizer.model");
  fuzz::write_input(data, size, "tokenizer.json");
  try {
    const Tokenizer tok = Tokenizer::load(fuzz::scratch_dir());
    const auto ids = tok.encode("Hello  world,\n\t<bos>caf\xC3\xA9 \xF0\x9F\x99\x82 <unk>", true);
    (void)tok.decode(ids);
  } catch (const std::exception&) {
  }
  return 0;
}
