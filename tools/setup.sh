#!/usr/bin/env bash
# Install everything elk needs on a Debian machine (run as root), then build the host runtime.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in gcc gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static libsodium-dev clang; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! python3 -c "import elk, serial, cffi, gguf, safetensors, sentencepiece, SCons" >/dev/null 2>&1; then
    echo "setup: installing Python packages"
    python3 -m pip install -q -e ".[test]"
fi
python3 -m SCons -Q -j"$(nproc)" >/dev/null
