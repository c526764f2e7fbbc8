#include "convert/conversion.h"

namespace ge::convert {

std::string convert_gemma3_mmproj(const Checkpoint& ckpt, OutType, formats::GgufWriter&, TensorPlan&) {
  fail((ckpt.dir / "config.json").string() + ": mmproj conversion is not written yet");
}

}  // namespace ge::convert
