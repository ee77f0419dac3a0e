"""Duo models under DDP on 2 gloo ranks log the losses of 1 process with the same global batch.

The random router draws a route for every token at every layer, and a learned router with Gumbel
noise draws noise for every token: if those draws came from each rank's own generator, rank 1
would route its sequences with the numbers rank 0 uses for its own, and 2 ranks would train
another model than 1 process. Each sequence draws from its own seed instead (the batch's
`sample_seeds`, from the sequence's place in the epoch; plugins.duo.routers.uniform_draws), so the
curves agree to float rounding (rtol 1e-5; a rank drawing other routes moves the loss by far more).

Run as a test module, a module fixture trains the 1-process runs here and both 2-rank runs in one
`torchrun` launch of this very file (start-up and plugin imports dominate at these sizes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from duo_models import TINY_DUO

# budget_weight 0: the budget term is a square of the batch's big share, which DDP averages over ranks
# as a mean of per-rank squares (not the square of the mean): here the Gumbel draws are what is tested.
LEARNED = ["model.router=learned", "model.router_options={estimator: gumbel, budget_weight: 0.0}"]
GLOBAL_BATCH = 8
ROUTERS = {"random": [], "learned-gumbel": LEARNED}


def scenarios(world_size: int) -> dict[str, list[str]]:
    # eval_batches counts micro-batches over all ranks: one global batch of validation sequences
    layout = [f"data.batch_size={GLOBAL_BATCH // world_size}", f"trainer.eval_batches={world_size}"]
    extra = ["dist.strategy=ddp"] if world_size > 1 else []
    return {f"{name}-{world_size}": [*TINY_DUO, *overrides, *layout, *extra] for name, overrides in ROUTERS.items()}


def run_scenarios(runs: dict[str, list[str]], results: Path) -> None:
    """Train each run into results/<name> (the process group stays up between runs)."""
    from toolkit.assembly import build_trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    threads = torch.get_num_threads()  # the recipe pins 1 thread; give the test process its own back
    trainer = None
    try:
        for name, overrides in runs.items():
            recipe = load_recipe("duo/tiny.yaml", [*overrides, f"trainer.out_dir={results / name}"], get_registries())
            trainer = build_trainer(recipe)
            trainer.fit()
    finally:
        torch.set_num_threads(threads)
        if trainer is not None:
            trainer.close()


if __name__ == "__main__":  # one rank of the torchrun launch
    run_scenarios(scenarios(2), Path(sys.argv[1]))
    sys.exit(0)


import pytest  # noqa: E402 - the torchrun ranks above need neither pytest nor the test helpers


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("duo-ddp")
    run_scenarios(scenarios(1), folder)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), __file__, str(folder)]
    launch = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=600)
    assert launch.returncode == 0, launch.stderr[-4000:]
    return folder


def logged(run_dir: Path, key: str) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record[key] for record in records if key in record}


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_routing_under_ddp_on_two_ranks_logs_the_losses_of_one_process(results, router):
    one, two = results / f"{router}-1", results / f"{router}-2"
    for key in ("loss", "val_loss", "big_share"):
        expected = logged(one, key)
        assert len(expected) == (2 if key == "val_loss" else 4), key
        assert logged(two, key) == pytest.approx(expected, rel=1e-5, abs=1e-6), key
    # Routing really is random: the routes (and so the big share) change from step to step.
    assert len(set(logged(one, "big_share").values())) > 1
