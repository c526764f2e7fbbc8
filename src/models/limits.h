// What a config.json or a GGUF's metadata may claim, checked as each value is read, before anything is sized by
// it: a hostile file then gets an error naming the key, never an allocation of whatever it asks for. The bounds
// are far beyond every published Gemma (at most 62 layers, vocabulary 262,144, widths under 2^16, context 2^17).
#pragma once
#include <cstdint>

namespace ge::models {

inline constexpr int64_t kMaxLayers = 1024;
// Any other size or count: widths, heads, vocabulary, context, window, experts.
inline constexpr int64_t kMaxConfigValue = int64_t{1} << 24;

}  // namespace ge::models
