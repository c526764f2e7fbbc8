#!/usr/bin/env bash
# Fuzzes every parser (fuzz/*_fuzz.cpp) with libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer.
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
#   scripts/fuzz.sh --runs N [TARGET...]      (CI: N inputs each from the seeds alone, seed 1: reproducible)
# Installs clang and libFuzzer if missing, builds build-fuzz/, seeds each target's corpus (build-fuzz/corpus/TARGET,
# kept between timed runs) from the repository's fixtures, runs each on one core, and exits non-zero on the first
# finding, whose input libFuzzer leaves in build-fuzz/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--runs" ]; then
  LIMIT=(-runs="$2" -seed=1); CORPUS=build-fuzz/ci-corpus; shift 2
  rm -rf "$CORPUS"
else
  LIMIT=(-max_total_time="${1:-60}"); CORPUS=build-fuzz/corpus; shift || true
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(gguf_fuzz safetensors_fuzz tokenizer_json_fuzz tokenizer_model_fuzz config_fuzz chat_fuzz)
scripts/install-packages.sh clang libclang-rt-14-dev
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DGE_FUZZ=ON -DGE_BUILD_TESTS=OFF -DGE_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}" >/dev/null

seed() {  # TARGET FILE...: copies the seeds into the target's corpus
  local dir=$CORPUS/$1; shift
  mkdir -p "$dir"
  for f in "$@"; do cp "$f" "$dir/seed-$(echo "$f" | tr / _)"; done
}
seed gguf_fuzz tests/data/gguf-types/gemma3-256-Q2_K.gguf
head -c 65536 models/gemma3-tiny/model.safetensors > build-fuzz/safetensors-seed
seed safetensors_fuzz build-fuzz/safetensors-seed
seed tokenizer_json_fuzz tests/data/gemma3n-tiny/tokenizer.json tests/data/gemma4-tiny/tokenizer.json
seed tokenizer_model_fuzz tests/data/gemma3n-tiny/tokenizer.model tests/data/sentencepiece-variant/tokenizer.model
seed config_fuzz models/gemma3-tiny/config.json tests/data/*/config.json
printf '\x03\x01Hello\x00\x02<|channel>thought\nhm<channel|>Hi\x00\x01Bye' > build-fuzz/chat-seed
seed chat_fuzz build-fuzz/chat-seed

mkdir -p build-fuzz/findings
for t in "${TARGETS[@]}"; do
  echo "== $t ${LIMIT[*]}"
  status=0
  build-fuzz/$t "$CORPUS/$t" "${LIMIT[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
    -artifact_prefix="build-fuzz/findings/$t-" -print_final_stats=1 >"build-fuzz/$t.log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY|artifact" "build-fuzz/$t.log" || true
  if [ "$status" -ne 0 ]; then echo "$t failed (exit $status): see build-fuzz/$t.log and build-fuzz/findings"; exit 1; fi
done
