// Runs a test body once per Highway target that this CPU supports, so every SIMD variant of a kernel is
// checked against its scalar reference, not only the one dispatch would pick.
#pragma once
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <functional>
#include <iostream>
#include <string>

#include "kernels/matmul_internal.h"

namespace ge::kernels {

// Narrows Highway's dispatch to one target for the guard's lifetime.
class ForceHighwayTarget {
 public:
  explicit ForceHighwayTarget(int64_t target) { hwy::SetSupportedTargetsForTest(target); }
  ~ForceHighwayTarget() { hwy::SetSupportedTargetsForTest(0); }
};

// Compiled targets that this CPU cannot run, e.g. "AVX3" on an AVX2-only machine.
inline std::string unsupported_highway_targets() {
  std::string names;
  for (int64_t bits = HWY_TARGETS & ~hwy::SupportedTargets(); bits != 0; bits &= bits - 1)
    names += std::string(names.empty() ? "" : " ") + hwy::TargetName(bits & -bits);
  return names;
}

// Runs body with Highway's dispatch narrowed to each target this CPU supports in turn.
inline void on_every_highway_target(const std::function<void()>& body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(hwy::TargetName(target));
    ForceHighwayTarget force(target);
    ASSERT_STREQ(detail::highway_target_name(), hwy::TargetName(target));
    body();
  }
  if (const std::string skipped = unsupported_highway_targets(); !skipped.empty())
    std::cout << "[   INFO   ] Highway targets this CPU cannot run, not tested: " << skipped << "\n";
}

}  // namespace ge::kernels
