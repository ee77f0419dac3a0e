"""Save time of a sharded checkpoint against a full one, for the tiny OpenELM under FSDP2.

Run under torchrun (gloo on CPU here):

    torchrun --nproc_per_node 2 tools/bench_sharded_save.py [--repeats 5] [--threads 1]

One trainer (`openelm/tiny.yaml`, `dist.strategy=fsdp`) takes a real step before each pair of
saves, so that the optimizer holds its moments; then `Trainer.save()` runs once per format, the
two formats alternating so that both see the same machine load. A save's time is the slowest
rank's, from a barrier to the end of the save (the full format gathers every tensor to rank 0 and
rank 0 writes safetensors; the sharded one has every rank write its own shards). Rank 0 prints
one JSON line on stdout: per format the median, the max, every time, and the checkpoint's size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def measure(repeats: int, threads: int) -> dict:
    from toolkit.assembly import assemble
    from toolkit.config import CheckpointFormat
    from toolkit.engine import distributed
    from toolkit.engine.trainer import Trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    with tempfile.TemporaryDirectory() as scratch:
        out_dir = distributed.gather_objects(scratch)[0]  # one run directory, rank 0's, for every rank
        recipe = load_recipe("openelm/tiny.yaml", [f"trainer.out_dir={out_dir}", "trainer.peak_flops=1e12",
                                                   "trainer.progress=false", "trainer.keep_last=2",
                                                   "dist.strategy=fsdp", f"trainer.threads={threads}"],
                             get_registries())
        trainer = Trainer(assemble(recipe))
        batches = iter(trainer.parts.train_data)
        seconds: dict[str, list[float]] = {"full": [], "sharded": []}
        sizes: dict[str, int] = {}
        for _ in range(repeats):
            trainer.run_step(batches)
            trainer.progress.step += 1
            for checkpoint_format in (CheckpointFormat.full, CheckpointFormat.sharded):
                trainer.config.checkpoint_format = checkpoint_format
                distributed.barrier()
                started = time.perf_counter()
                checkpoint = trainer.save()
                elapsed = torch.tensor([time.perf_counter() - started], dtype=torch.float64)
                if torch.distributed.is_initialized():
                    torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
                seconds[checkpoint_format.value].append(float(elapsed))
                if trainer.context.is_main:
                    sizes[checkpoint_format.value] = directory_bytes(checkpoint)
        world_size = trainer.context.world_size
        distributed.barrier()  # rank 0's directory goes when every rank is done with it
        trainer.close()
    return {"world_size": world_size, "saves_per_format": repeats,
            **{name: {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                      "all_s": [round(value, 3) for value in times], "checkpoint_mb": round(sizes.get(name, 0) / 1e6, 1)}
               for name, times in seconds.items()}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="saves per format")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    arguments = parser.parse_args(argv)
    result = measure(arguments.repeats, arguments.threads)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
