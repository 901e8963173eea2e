#!/usr/bin/env bash
# Set up (tools/setup.sh) and run the whole test suite. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec python3 -m pytest -q "$@"
