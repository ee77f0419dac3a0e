"""Is label mining ever the bottleneck? The image-text pipeline's images/s vs what training eats.

    python tools/bench_image_pipeline.py [catlip/tiny.yaml] [--batches 30] [--steps 15]

Measures, on the recipe's own data (built-in OpenMoji by default):
  * label mining: seconds to mine every training caption's synsets from scratch (the label
    cache then makes later epochs and runs free of it);
  * pipeline: images/s the training source delivers (decode, random resized crop, flip,
    normalise, multi-hot labels from the warm cache), in this process, as training reads it;
  * consumption: images/s the recipe's training step takes in (real `Trainer._train_step` on
    batches made beforehand, so the pipeline is not in it).
Target: pipeline >= 5x consumption. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from plugins.catlip import labels as label_cache
from plugins.catlip.synsets import SynsetMapper
from toolkit.cli.common import run_cli
from toolkit.data import ShardInfo
from toolkit.engine.trainer import Trainer
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_image_pipeline.py", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="catlip/tiny.yaml")
    parser.add_argument("--batches", type=int, default=30, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=15, help="training steps timed")
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        overrides = [f"trainer.out_dir={scratch}/run", "trainer.progress=false", "trainer.peak_flops=1e12"]
        recipe = load_recipe(arguments.recipe, overrides, get_registries())
        data = recipe.components["data"]
        data.build("train", ShardInfo())  # shards, indexes and vocabulary exist from here on

        # Cold mining: every caption through WordNet with an empty word memo (WordNet itself is
        # loaded first: that is a one-off of seconds, not mining).
        source = data.build("train", ShardInfo())
        vocabulary = label_cache.load_vocabulary(source.vocabulary_path)
        wordnet = label_cache.shared_mapper().wordnet
        started = time.perf_counter()
        fresh = SynsetMapper(wordnet)
        for index in source.indexes:
            vocabulary.mine_labels(index.captions, fresh)
        mining_seconds = time.perf_counter() - started

        source = data.build("train", ShardInfo())  # warm: labels come from the cache
        next(iter(source))
        started = time.perf_counter()
        for _ in range(arguments.batches):
            source.next_batch()
        pipeline = arguments.batches * data.config.batch_size / (time.perf_counter() - started)

        trainer = Trainer(recipe)
        batches = [source.next_batch() for _ in range(arguments.steps + 2)]
        times = []
        for index, batch in enumerate(batches):
            started = time.perf_counter()
            trainer._train_step(iter([batch]))
            if index >= 2:
                times.append(time.perf_counter() - started)
        trainer.close()
    consumption = data.config.batch_size / statistics.median(times)
    result = {"pipeline_img_s": pipeline, "consumption_img_s": consumption, "ratio": pipeline / consumption,
              "label_mining_s": mining_seconds, "captions": source.num_samples,
              "batch_size": data.config.batch_size, "image_size": data.config.image_size}
    print(f"label mining, cold cache: {mining_seconds:.2f} s for {source.num_samples} captions")
    print(f"pipeline: {pipeline:.0f} images/s; training consumes {consumption:.0f} images/s; "
          f"ratio {pipeline / consumption:.1f} (target >= 5)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run))
