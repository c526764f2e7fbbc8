#!/usr/bin/env bash
# Builds the project and its tests with AddressSanitizer + UndefinedBehaviorSanitizer (GCC, CMake option
# GE_SANITIZE) in build-asan/ and runs the whole test suite there: any report (an out-of-bounds access, a leak,
# undefined behaviour) fails the test that caused it, and the script.
#   scripts/sanitize.sh [CTEST_ARGS...]      (after scripts/setup.sh has installed the dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DGE_SANITIZE=ON -DGE_BUILD_BENCH=OFF >/dev/null
# GCC's -Wstringop-overflow / -Wrestrict see false cases in ASan-instrumented standard library code: the build's
# output goes to a log, shown only when the build fails.
cmake --build build-asan -j"$(nproc)" >build-asan/build.log 2>&1 || { tail -n 60 build-asan/build.log; exit 1; }
# Every UBSan report ends the process (-fno-sanitize-recover); ASan's leak check runs at each process's exit.
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" "$@"
