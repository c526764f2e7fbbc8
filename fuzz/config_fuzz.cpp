// A config.json from a stranger, resolved as every family's config (and the Gemma 3 vision tower's) would be.
#include <nlohmann/json.hpp>

#include "models/gemma/config.h"
#include "models/gemma3n/config.h"
#include "models/gemma4/config.h"
#include "models/siglip/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ge;
  const auto json = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  const auto attempt = [&](auto resolve) {
    try {
      resolve();
    } catch (const std::exception&) {
    }
  };
  attempt([&] { (void)gemma::resolve_config(json, "config.json"); });
  attempt([&] { (void)gemma3n::resolve_config(json, "config.json"); });
  attempt([&] { (void)gemma4::resolve_config(json, "config.json"); });
  attempt([&] { (void)siglip::resolve_gemma3_vision_config(json, 64, "config.json"); });
  return 0;
}
