"""DDP, FSDP2 sharding everything and FSDP2 sharding gradients and optimizer state only
(`dist.reshard_after_forward: false`) give the same losses on 2 gloo ranks for the same global
batch, in one torchrun launch started by toolkit-bench's own launcher.

Each rank runs this file: the three runs one after another in one process group, each measured
by toolkit-bench's `measure_steps`; after each, one more forward shows whether the blocks' weights
stayed gathered (whole tensors) or were sharded again (DTensors) once the forward ended.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

# The OpenELM tiny recipe shrunk to seconds: 2 layers, width 32, 16-token windows, fp32.
TINY = ["model.num_layers=2", "model.model_dim=32", "model.head_dim=8", "model.ffn_dim_divisor=16",
        "data.seq_len=16", "data.batch_size=4", "trainer.max_steps=4", "trainer.precision=fp32",
        "schedule.warmup_steps=1", "trainer.peak_flops=1e12", "trainer.progress=false", "trainer.threads=1"]
STRATEGIES = {"ddp": ["dist.strategy=ddp"], "fsdp_full": ["dist.strategy=fsdp"],
              "fsdp_grad_op": ["dist.strategy=fsdp", "dist.reshard_after_forward=false"]}
STEPS = 4


def weights_stay_gathered_after_forward(trainer) -> bool:
    """One training forward (and its backward), looking at a block's weight in between."""
    from torch.distributed.tensor import DTensor

    model = trainer.models.trained[0]
    ids = torch.randint(0, 64, (2, 16))
    logits = model.wrapped(ids)  # [B, S, V]
    gathered = not isinstance(model.module.layers[0].attn.qkv_proj.weight, DTensor)
    logits.sum().backward()  # FSDP2 ends the step it began (gradients are reduced, weights resharded)
    return gathered


def run_ranks(cell_dir: Path) -> None:
    from toolkit.assembly import build_trainer
    from toolkit.bench.cell import RESULT_FILE, measure_steps
    from toolkit.files import atomic_write_text
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    report, trainer, finished = {"status": "ok"}, None, False
    try:
        for name, overrides in STRATEGIES.items():
            recipe = load_recipe("openelm/tiny.yaml", [*TINY, *overrides, f"trainer.out_dir={cell_dir / name}"],
                                 get_registries())
            trainer = build_trainer(recipe)  # the process group stays up between the runs
            measured = measure_steps(trainer, STEPS)
            report[name] = {"losses": measured["losses"], "step_tokens": measured["step_tokens"],
                            "world_size": measured["world_size"],
                            "gathered_after_forward": weights_stay_gathered_after_forward(trainer)}
        finished = True
    finally:
        if trainer is not None:
            trainer.close(finished)  # as toolkit-train: a barrier before leaving the group after success
    if int(os.environ["RANK"]) == 0:
        atomic_write_text(cell_dir / RESULT_FILE, json.dumps(report))


if __name__ == "__main__":  # one rank of the torchrun launch
    run_ranks(Path(sys.argv[1]))
    sys.exit(0)


import pytest  # noqa: E402 - the torchrun ranks above need neither pytest nor the test helpers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    from toolkit.bench.runner import launch_with_torchrun

    cell_dir = tmp_path_factory.mktemp("strategies")
    outcome = launch_with_torchrun(cell_dir, 2, 600, program=(__file__,))
    assert outcome["status"] == "ok", outcome
    return outcome


def test_ddp_and_both_fsdp2_modes_give_the_same_losses_for_the_same_global_batch(report):
    ddp = report["ddp"]
    assert ddp["world_size"] == 2 and ddp["step_tokens"] == [128.0] * STEPS  # 2 ranks x 4 x 16 tokens
    assert len(set(ddp["losses"])) == STEPS  # the model trains: every step's loss differs
    for mode in ("fsdp_full", "fsdp_grad_op"):
        assert report[mode]["losses"] == pytest.approx(ddp["losses"], rel=1e-5, abs=1e-6), mode


def test_only_the_gradient_and_optimizer_mode_keeps_weights_gathered_after_forward(report):
    assert report["fsdp_grad_op"]["gathered_after_forward"] is True
    assert report["fsdp_full"]["gathered_after_forward"] is False
    assert report["ddp"]["gathered_after_forward"] is True  # DDP never shards

