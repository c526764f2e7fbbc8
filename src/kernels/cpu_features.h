// CPU features that not every compiler's __builtin_cpu_supports names (clang 14 knows no "f16c").
#pragma once

namespace ge::kernels {

// F16C: the vcvtps2ph / vcvtph2ps conversions between f32 and f16 (CPUID leaf 1, ECX bit 29).
bool cpu_has_f16c();

}  // namespace ge::kernels
