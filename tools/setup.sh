#!/usr/bin/env bash
# Install everything elk needs on a Debian machine (run as root), then build the host runtime.
# Idempotent: installs only what is missing, so it is cheap to run before every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
for pkg in gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf \
           libc6-dev-armhf-cross qemu-user-static libsodium-dev clang libclang-rt-14-dev; do
    # "$pkg:<native arch>" too: with arm64/armhf libraries installed (below) a bare name is ambiguous.
    dpkg -s "$pkg" >/dev/null 2>&1 || dpkg -s "$pkg:$(dpkg --print-architecture)" >/dev/null 2>&1 || need+=("$pkg")
done
command -v python3 >/dev/null || need+=(python3 python3-dev)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    apt_install "${need[@]}"
fi

# Cross builds link the trust module against the target's libsodium: Debian multiarch packages.
cross=()
for arch in arm64 armhf; do
    dpkg --print-foreign-architectures | grep -qx "$arch" || dpkg --add-architecture "$arch"
    dpkg -s "libsodium-dev:$arch" >/dev/null 2>&1 || cross+=("libsodium-dev:$arch")
done
if [ "${#cross[@]}" -gt 0 ]; then
    echo "setup: installing cross libraries: ${cross[*]}"
    apt-get update -qq || apt-get update -qq || true  # a mirror caught mid-sync fails one index; retry once
    apt_updated=1
    apt_install "${cross[@]}"
fi

# tokenizers: the tests need >= 0.20 (pyproject.toml says why); an older one is upgraded here.
if ! python3 -c "import elk, numpy, serial, cffi, gguf, safetensors, sentencepiece, huggingface_hub, cryptography, flatbuffers, SCons, pytest, ai_edge_litert, tokenizers, jinja2
import sys; v = tuple(int(x) for x in tokenizers.__version__.split('.')[:3] if x.isdigit())
sys.exit(v < (0, 20))" >/dev/null 2>&1; then
    echo "setup: installing Python packages"
    # Debian's own python3 refuses system-wide pip installs (PEP 668); this is a dedicated machine.
    python3 -m pip install -q -e ".[test]" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages -e ".[test]"
fi
# Fuzzing the Python board-file loader (fuzz/run.py); optional: the runner falls back to a mutation loop.
python3 -c "import atheris" >/dev/null 2>&1 || python3 -m pip install -q atheris 2>/dev/null \
    || python3 -m pip install -q --break-system-packages atheris 2>/dev/null || echo "setup: atheris not installed"
python3 -m SCons -Q -j"$(nproc)" >/dev/null
