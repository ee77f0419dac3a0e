"""Is label mining ever the bottleneck? The image-text pipeline's images/s vs what training eats.

    python tools/bench_image_pipeline.py [catlip/tiny.yaml] [--rounds 20]

Measures, on the recipe's own data (built-in OpenMoji by default):
  * label mining: seconds to mine every training caption's synsets from scratch (the label
    cache then makes later epochs and runs free of it);
  * pipeline: images/s the training source delivers (decode, random resized crop, flip,
    normalise, multi-hot labels from the warm cache), in this process, as training reads it;
  * consumption: images/s the recipe's training step takes in (real `Trainer.run_step` on a
    batch made the round before, so the pipeline is not in it).
The two alternate, round after round, and medians are compared. Target: pipeline >= 5x
consumption. The last line is JSON.
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
from toolkit.assembly import build_trainer
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_image_pipeline.py", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="catlip/tiny.yaml")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds, each one pipeline batch and one step")
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
        trainer = build_trainer(recipe)
        batches = [source.next_batch() for _ in range(2)]  # the first steps are warm-up
        pipeline_times, step_times = [], []
        # Interleaved, one pipeline batch then one training step per round, so that whatever else
        # the machine is doing slows both alike and the ratio stays meaningful.
        for round_index in range(arguments.rounds + 2):
            started = time.perf_counter()
            batch = source.next_batch()
            pipeline_elapsed = time.perf_counter() - started
            started = time.perf_counter()
            trainer.run_step(iter([batches[round_index % 2]]))
            step_elapsed = time.perf_counter() - started
            batches[round_index % 2] = batch
            if round_index >= 2:
                pipeline_times.append(pipeline_elapsed)
                step_times.append(step_elapsed)
        trainer.close()
    pipeline = data.config.batch_size / statistics.median(pipeline_times)
    consumption = data.config.batch_size / statistics.median(step_times)
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
