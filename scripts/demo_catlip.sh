#!/usr/bin/env bash
# CatLIP end to end on the CPU: pretrain the tiny tower on OpenMoji (catlip/tiny.yaml),
# then linear-probe it on Fashion-MNIST twice, with Transfer Init and with a random head, and
# compare validation accuracy and which classes matched a pretraining synset.
# Extra arguments go to both transfer runs (e.g. model.freeze_backbone=false optim.lr=5.0e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
toolkit-train catlip/tiny.yaml trainer.out_dir=runs/catlip-tiny --overwrite
for head in transfer random; do
    toolkit-train transfer/fashion_mnist.yaml model.init_from=runs/catlip-tiny model.head="$head" \
        trainer.out_dir="runs/catlip-transfer-$head" --overwrite "$@"
done
python tools/compare_transfer.py runs/catlip-transfer-transfer runs/catlip-transfer-random
