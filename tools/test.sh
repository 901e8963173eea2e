#!/usr/bin/env bash
# Set up (tools/setup.sh) and run the whole test suite. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# Test THIS checkout: tests run `python -m elk` in subprocesses, which would otherwise import whichever
# checkout `pip install -e` last pointed at (and its build/host/libelk.so).
export PYTHONPATH="$PWD/host${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m pytest -q "$@"
