#!/usr/bin/env bash
# Sets everything up and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
# A cache of its own, so the suite never depends on what an earlier run left behind.
export TOOLKIT_CACHE="${TOOLKIT_CACHE:-$(mktemp -d)/toolkit-cache}"
# Two pytest workers (pytest-xdist), one thread each: most tests are subprocesses that spend their
# time starting Python and torch, so two of them at once use both cores without oversubscribing.
# TEST_WORKERS=0 runs in one process; arguments after the script go to pytest. The 25 slowest
# tests are listed at the end, so CI logs show where the 15-minute budget goes.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON" -m pytest -q -n "${TEST_WORKERS:-2}" --durations=25 "$@"
