#!/usr/bin/env bash
# Sets everything up and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
# A cache of its own, so the suite never depends on what an earlier run left behind.
export TOOLKIT_CACHE="${TOOLKIT_CACHE:-$(mktemp -d)/toolkit-cache}"
exec "$PYTHON" -m pytest -q "$@"
