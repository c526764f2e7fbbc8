#!/usr/bin/env bash
# Fuzzes every parser (fuzz/*_fuzz.cpp) with libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer.
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
#   scripts/fuzz.sh --runs N [TARGET...]      (CI: N inputs each from the seeds alone, seed 1: reproducible)
# Installs clang and libFuzzer if missing, builds build-fuzz/, seeds each target's corpus (build-fuzz/corpus/TARGET,
# kept between timed runs) from the repository's fixtures and fuzz/regressions/, runs each on one core with its
# dictionary (fuzz/dict), and exits non-zero on the first finding, whose input libFuzzer leaves in
# build-fuzz/findings/: once fixed, it goes in fuzz/regressions/TARGET/ (and a test), to run in every later run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--runs" ]; then
  LIMIT=(-runs="$2" -seed=1); CORPUS=build-fuzz/ci-corpus; shift 2
  rm -rf "$CORPUS"
else
  LIMIT=(-max_total_time="${1:-60}"); CORPUS=build-fuzz/corpus; shift || true
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(gguf_fuzz safetensors_fuzz folder_json_fuzz tokenizer_json_fuzz tokenizer_model_fuzz
                                     config_fuzz chat_fuzz image_fuzz http_fuzz)
scripts/install-packages.sh clang libclang-rt-14-dev
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DGE_FUZZ=ON -DGE_BUILD_TESTS=OFF -DGE_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}" >/dev/null

seed() {  # TARGET FILE...: copies the seeds into the target's corpus
  local dir=$CORPUS/$1; shift
  mkdir -p "$dir"
  for f in "$@"; do cp "$f" "$dir/seed-$(echo "$f" | tr / _)"; done
}
seed_picked() {  # TARGET BYTE FILE...: as seed, each file after the byte that picks what the target makes of it
  local target=$1 byte=$2; shift 2
  for f in "$@"; do
    local picked=build-fuzz/seeds/$target-$byte-$(echo "$f" | tr / _)
    { printf "\\x$byte"; cat "$f"; } > "$picked"
    seed "$target" "$picked"
  done
}
seed gguf_fuzz tests/data/gguf-types/gemma3-256-Q2_K.gguf
head -c 65536 models/gemma3-tiny/model.safetensors > build-fuzz/safetensors-seed
seed safetensors_fuzz build-fuzz/safetensors-seed
seed tokenizer_json_fuzz tests/data/gemma3n-tiny/tokenizer.json tests/data/gemma4-tiny/tokenizer.json
seed tokenizer_model_fuzz tests/data/gemma3n-tiny/tokenizer.model tests/data/sentencepiece-variant/tokenizer.model
seed config_fuzz models/gemma3-tiny/config.json tests/data/*/config.json
printf '\x03\x01Hello\x00\x02<|channel>thought\nhm<channel|>Hi\x00\x01Bye' > build-fuzz/chat-seed
seed chat_fuzz build-fuzz/chat-seed
mkdir -p build-fuzz/seeds
echo '{"metadata": {"total_size": 8}, "weight_map": {"a": "model-00001-of-00001.safetensors"}}' > build-fuzz/seeds/index.json
seed_picked folder_json_fuzz 00 build-fuzz/seeds/index.json
seed_picked folder_json_fuzz 01 models/gemma3-tiny/tokenizer_config.json tests/data/gemma4-tiny/tokenizer_config.json
seed_picked folder_json_fuzz 02 models/gemma3-tiny/generation_config.json tests/data/gemma4-tiny/generation_config.json
seed_picked folder_json_fuzz 03 tests/data/gemma3-tiny-vision/preprocessor_config.json
seed_picked folder_json_fuzz 04 tests/data/gemma3-tiny-vision/processor_config.json
seed_picked image_fuzz 00 tests/data/images/decode/*.{bmp,gif,jpg,png,webp}
seed_picked image_fuzz 83 tests/data/images/decode/png_palette.png
route=0  # the body of each route in turn
for body in '{"model": "gemma3-tiny", "prompt": "Hi", "options": {"num_predict": 3, "temperature": 0}}' \
            '{"model": "gemma3-tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": false}' \
            '{"model": "gemma3-tiny"}' \
            '{"model": "gemma3-tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": true}' \
            '{"model": "gemma3-tiny", "prompt": "Hi", "max_tokens": 2, "stop": ["a"]}'; do
  echo -n "$body" > build-fuzz/seeds/http-$route.json
  seed_picked http_fuzz "0$route" build-fuzz/seeds/http-$route.json
  route=$((route + 1))
done

# Inputs that once found something (fixed since) run first, in every run: fuzz/regressions/TARGET/.
for dir in fuzz/regressions/*/; do
  [ -d "$dir" ] && seed "$(basename "$dir")" "$dir"*
done

dictionary() {  # TARGET: libFuzzer's -dict option for it, if it has one (fuzz/dict)
  case $1 in
    config_fuzz|folder_json_fuzz|tokenizer_json_fuzz) echo -dict=fuzz/dict/json.dict ;;
    *) if [ -f "fuzz/dict/$1.dict" ]; then echo "-dict=fuzz/dict/$1.dict"; fi ;;
  esac
}

mkdir -p build-fuzz/findings
for t in "${TARGETS[@]}"; do
  echo "== $t ${LIMIT[*]}"
  status=0
  # shellcheck disable=SC2046  # the dictionary option is one word or none
  build-fuzz/$t "$CORPUS/$t" "${LIMIT[@]}" $(dictionary "$t") -timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
    -artifact_prefix="build-fuzz/findings/$t-" -print_final_stats=1 >"build-fuzz/$t.log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY|artifact" "build-fuzz/$t.log" || true
  if [ "$status" -ne 0 ]; then echo "$t failed (exit $status): see build-fuzz/$t.log and build-fuzz/findings"; exit 1; fi
done
