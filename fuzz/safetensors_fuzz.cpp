// A safetensors file from a stranger: the header JSON, the tensor table, dtypes, shapes and offsets against
// the file's size.
#include "formats/safetensors.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge;
  fuzz::write_input(data, size, "model.safetensors");
  try {
    const formats::SafetensorsCheckpoint ckpt(fuzz::scratch_dir(), /*populate=*/false);
    size_t bytes = 0;
    for (const Tensor* t : ckpt.all()) bytes += t->nbytes;
    (void)bytes;
  } catch (const std::exception&) {
  }
  return 0;
}
