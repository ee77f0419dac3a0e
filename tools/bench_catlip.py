"""CatLIP vs the CLIP baseline on the same engine, and the engine's overhead over a bare loop.

    python tools/bench_catlip.py [--image-tower tiny|b16] [--batch-size 64] [--precision bf16]
                                 [--rounds|--steps 8] [--device cpu|cuda]

Three step functions run interleaved, round after round, on the same pre-made batches (the data
pipeline is left out; tools/bench_image_pipeline.py measures it):
  * catlip: the real `Trainer.run_step` of catlip/tiny.yaml (ViT + synset head + BCE);
  * clip:   the real `Trainer.run_step` of clip/tiny.yaml (the same ViT as image tower,
            open_clip's ViT-S-32 text tower, ClipLoss);
  * bare:   a plain PyTorch loop doing catlip's work (same model init, optimizer, schedule, autocast,
            clipping) with nothing else.
Medians of the per-round times give images/s; `ratio` = catlip / clip images/s (the CatLIP paper
reports 2.7x less pretraining compute than CLIP), `engine_overhead` = catlip / bare step time - 1.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from toolkit.cli.common import run_cli
from toolkit.assembly import build_trainer
from toolkit.engine.trainer import Trainer, move_to
from toolkit.plugins import get_registries
from toolkit.recipe import Recipe, load_recipe

TOWERS = {  # model overrides that put each tower into both recipes
    "tiny": [],
    "b16": ["model.patch_size=16", "model.num_layers=12", "model.num_heads=12", "model.hidden_dim=768",
            "model.mlp_dim=3072", "data.image_size=224"],
}


def make_trainer(recipe_name: str, overrides: list[str], out_dir: str) -> tuple[Recipe, Trainer]:
    recipe = load_recipe(recipe_name, [*overrides, f"trainer.out_dir={out_dir}", "trainer.progress=false"],
                         get_registries())
    return recipe, build_trainer(recipe)


def bare_step_function(recipe: Recipe, trainer: Trainer):
    """catlip's step written as a plain loop over a fresh copy of the same model and optimizer."""
    torch.manual_seed(recipe.trainer.seed)
    with torch.device(trainer.context.device):
        model = recipe.models["model"].component.build()
    model.load_state_dict(trainer.models.trained[0].module.state_dict())
    optimizer = recipe.components["optim"].build(model)
    scheduler = recipe.components["schedule"].build(optimizer, recipe.trainer.max_steps)
    loss_function = recipe.components["loss"].build()
    bf16 = recipe.trainer.precision == "bf16"
    device = trainer.context.device

    def step(batch) -> None:
        batch = move_to(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_function(model(batch["images"]), batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.trainer.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the engine logs the loss every step: one sync each, as here

    return step


def timed(function, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_catlip.py", description=__doc__.splitlines()[0])
    parser.add_argument("--image-tower", choices=sorted(TOWERS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--rounds", "--steps", dest="rounds", type=int, default=8, help="timed rounds (each runs all three steps)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    arguments = parser.parse_args(argv)
    overrides = [*TOWERS[arguments.image_tower], f"data.batch_size={arguments.batch_size}",
                 f"trainer.precision={arguments.precision}", f"dist.device={arguments.device}",
                 "trainer.peak_flops=1e12", f"trainer.max_steps={arguments.rounds + arguments.warmup + 1}"]
    with tempfile.TemporaryDirectory() as scratch:
        catlip_recipe, catlip = make_trainer("catlip/tiny.yaml", overrides, f"{scratch}/catlip")
        _, clip = make_trainer("clip/tiny.yaml", overrides, f"{scratch}/clip")
        device = catlip.context.device
        source = iter(catlip.parts.train_data)
        batches = [next(source) for _ in range(arguments.rounds + arguments.warmup)]
        bare = bare_step_function(catlip_recipe, catlip)
        times: dict[str, list[float]] = {"catlip": [], "clip": [], "bare": []}
        for round_index, batch in enumerate(batches):
            # Alternate the order so that no step always runs right after another one.
            steps = [("catlip", lambda batch=batch: catlip.run_step(iter([batch]))),
                     ("clip", lambda batch=batch: clip.run_step(iter([batch]))),
                     ("bare", lambda batch=batch: bare(batch))]
            for name, step in steps if round_index % 2 == 0 else steps[::-1]:
                elapsed = timed(step, device)
                if round_index >= arguments.warmup:
                    times[name].append(elapsed)
        catlip.close()
        clip.close()
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "catlip_img_s": arguments.batch_size / median["catlip"],
        "clip_img_s": arguments.batch_size / median["clip"],
        "ratio": median["clip"] / median["catlip"],
        "engine_overhead": median["catlip"] / median["bare"] - 1,
        "bare_img_s": arguments.batch_size / median["bare"],
        "image_tower": arguments.image_tower, "batch_size": arguments.batch_size,
        "precision": arguments.precision, "device": str(device), "rounds": arguments.rounds,
        "threads": torch.get_num_threads(),
    }
    for name in ("catlip", "clip", "bare"):
        spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f}"
        print(f"{name:>7}: median step {median[name] * 1e3:8.1f} ms (range {spread} ms), "
              f"{arguments.batch_size / median[name]:8.1f} images/s")
    print(f"ratio catlip/clip images/s: {result['ratio']:.2f} (target >= 2.7); "
          f"engine overhead over a bare loop: {result['engine_overhead'] * 100:+.1f}% (target <= 5%)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run))
