#!/usr/bin/env bash
# Sets everything up, trains the tiny OpenELM on Shakespeare, and prints a generated sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
toolkit-train openelm/tiny.yaml trainer.out_dir=runs/openelm-tiny --overwrite "$@"
toolkit-generate runs/openelm-tiny --prompt "ROMEO:" --max-new-tokens 120 --temperature 0.8 --top-k 50 --seed 0
