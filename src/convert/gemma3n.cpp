#include "convert/conversion.h"

namespace ge::convert {

std::string convert_gemma3n(const Checkpoint& ckpt, OutType, formats::GgufWriter&, TensorPlan&) {
  fail((ckpt.dir / "config.json").string() + ": gemma3n conversion is not written yet");
}

}  // namespace ge::convert
