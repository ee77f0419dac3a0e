"""The label statistics of a CatLIP recipe's data, and the loss a model that ignores images reaches.

    python tools/catlip_label_stats.py catlip/tiny.yaml [key=value ...]

Prints the vocabulary size, labels per caption, captions with no synset, and the validation loss
of always predicting each class's training frequency (CatLIP's BCE, summed over classes): a
trained model's validation loss should end well below it. Last line JSON.
"""

from __future__ import annotations

import json
import sys

from plugins.catlip.labels import frequency_baseline
from toolkit.cli.common import recipe_arguments, run_cli
from toolkit.data import ShardInfo
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe


def label_stats(recipe_name: str, overrides: list[str]) -> dict:
    recipe = load_recipe(recipe_name, overrides, get_registries())
    spec = recipe.components["data"]
    train, val = spec.build("train", ShardInfo()), spec.build("val", ShardInfo())
    train_rows = [row for shard in train.labels for row in shard]
    val_rows = [row for shard in val.labels for row in shard] if val is not None else []
    return {
        "classes": train.num_classes,
        "train_samples": train.num_samples,
        "val_samples": len(val_rows),
        "labels_per_caption": sum(map(len, train_rows)) / max(1, len(train_rows)),
        "train_without_synset": train.empty_labels,
        "frequency_baseline_val_loss": frequency_baseline(train_rows, val_rows, train.num_classes),
    }


def run(argv: list[str]) -> int:
    arguments = recipe_arguments("catlip_label_stats.py", __doc__.strip(), argv)
    stats = label_stats(arguments.recipe, arguments.overrides)
    for key, value in stats.items():
        print(f"{key:>30}: {value:.4g}" if isinstance(value, float) else f"{key:>30}: {value}")
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run))
