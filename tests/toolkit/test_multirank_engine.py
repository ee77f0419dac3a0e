"""The engine's multi-rank paths on 2 gloo ranks, each checked against 1 rank with the same global batch.

Run as a test module, a module fixture trains in three phases, so that everything multi-rank
shares one `torchrun` launch (process start-up and plugin imports dominate at these sizes):

1. in this process, 1 rank: OpenELM (the reference curve, saving step 3) and CLIP;
2. `torchrun --nproc_per_node 2` of this very file: OpenELM under FSDP2 (then resumed from its
   step 3), OpenELM under DDP with gradient accumulation, OpenELM resumed on 2 ranks from the
   1-rank step 3 (also with its optimizer state in the older numbered layout), and CLIP under DDP;
3. in this process, 1 rank: OpenELM resumed from the 2-rank DDP run's step 3.

Every OpenELM run has the same global batch of 8 sequences (1 x 8; 2 x 4; 2 x 2 x grad_accum 2),
fp32, and an EMA. Runs at different world sizes agree to float rounding (a gradient averaged over
ranks is summed in another order), so they are compared with rtol 1e-5: a rank reading the wrong
items, a gradient not averaged, or an accumulation step that syncs wrongly moves the loss by far
more. A resume at the same world size must be bit-identical. CLIP's random crops and flips are
drawn per image from the image's place in the epoch (toolkit.data.order), so both world sizes see
the same pixels. Neither model draws random numbers in its forward pass (OpenELM has no dropout,
CLIP's is 0): the RNG of a rank cannot continue at another world size, so a run with dropout
resumed at another world size draws other masks than an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

# The OpenELM tiny recipe shrunk to seconds: 2 layers, width 32, 16-token windows, 6 steps.
OPENELM = ["model.num_layers=2", "model.model_dim=32", "model.head_dim=8", "model.ffn_dim_divisor=16",
           "data.seq_len=16", "trainer.max_steps=6", "trainer.save_every=3", "trainer.keep_last=0",
           "trainer.log_every=1", "trainer.eval_every=0", "trainer.eval_batches=2", "trainer.precision=fp32",
           "trainer.ema_decay=0.9", "schedule.warmup_steps=2", "trainer.peak_flops=1e12", "trainer.progress=false",
           "trainer.threads=1"]
# The CLIP tiny recipe with a 1-layer width-32 image tower, open_clip's smallest text tower (width
# 256), 2 steps; its random crops and flips stay on.
CLIP = ["model.num_layers=1", "model.hidden_dim=32", "model.num_heads=2", "model.mlp_dim=64", "model.num_classes=32",
        "model.text_model=ViT-S-32-alt", "trainer.max_steps=2", "trainer.save_every=0", "trainer.keep_last=1",
        "trainer.log_every=1", "trainer.eval_every=0", "trainer.eval_batches=1", "trainer.precision=fp32",
        "schedule.warmup_steps=1", "trainer.peak_flops=1e12", "trainer.progress=false", "trainer.threads=1"]
GLOBAL_BATCH = 8
CHECKPOINT = "step-000003"

# name -> (recipe, overrides, checkpoint to resume from, relative to the results folder)
SINGLE_RANK = {
    "lm-one": ("openelm/tiny.yaml", [*OPENELM, f"data.batch_size={GLOBAL_BATCH}"], None),
    "clip-one": ("clip/tiny.yaml", [*CLIP, f"data.batch_size={GLOBAL_BATCH}"], None),
}
TWO_RANKS = {
    "lm-fsdp": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=4", "dist.strategy=fsdp"], None),
    "lm-fsdp-resumed": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=4", "dist.strategy=fsdp"],
                        f"lm-fsdp/{CHECKPOINT}"),
    "lm-ddp-accum": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=2", "trainer.grad_accum=2",
                                           "dist.strategy=ddp"], None),
    "lm-one-to-two": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=4", "dist.strategy=fsdp"],
                      f"lm-one/{CHECKPOINT}"),
    "lm-old-layout-to-two": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=4", "dist.strategy=fsdp"],
                             f"lm-old-layout/{CHECKPOINT}"),
    "clip-two": ("clip/tiny.yaml", [*CLIP, "data.batch_size=4", "dist.strategy=ddp"], None),
}
BACK_TO_ONE_RANK = {
    "lm-two-to-one": ("openelm/tiny.yaml", [*OPENELM, f"data.batch_size={GLOBAL_BATCH}"],
                      f"lm-ddp-accum/{CHECKPOINT}"),
}


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of a (not sharded) module's parameters: equal on every rank when DDP keeps them in step."""
    digest = hashlib.sha256()
    for name, parameter in module.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def count_gradient_syncs(ddp: torch.nn.Module) -> dict[str, int]:
    """Count DDP's gradient all-reduces (one per bucket per synced backward) through a comm hook
    that does the default all-reduce: `no_sync` micro-steps must not reach it."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    counter = {"count": 0}

    def counting_allreduce(state, bucket):
        counter["count"] += 1
        return allreduce_hook(None, bucket)

    ddp.register_comm_hook(None, counting_allreduce)
    return counter


def run_scenarios(scenarios: dict, results: Path) -> None:
    """Train each scenario into results/<name>; every rank writes results/<name>.rank<r>.json with
    its wall time and (when its weights are whole) their digest. The process group stays up
    between scenarios and is left once at the end."""
    from toolkit.assembly import build_trainer
    from toolkit.plugins import get_registries

    threads = torch.get_num_threads()  # the recipes pin 1 thread; give the test process its own back
    trainer = None
    try:
        for name, (recipe_name, overrides, resume) in scenarios.items():
            from toolkit.recipe import load_recipe

            started = time.perf_counter()
            recipe = load_recipe(recipe_name, [*overrides, f"trainer.out_dir={results / name}"], get_registries())
            trainer = build_trainer(recipe, resume=str(results / resume) if resume else None)
            model = trainer.models.trained[0]
            syncs = count_gradient_syncs(model.wrapped) if model.strategy and model.strategy.value == "ddp" else None
            trainer.fit()
            context = trainer.context
            report = {"seconds": time.perf_counter() - started, "world_size": context.world_size,
                      "digest": None if model.strategy and model.strategy.value == "fsdp" else weights_digest(model.module),
                      "gradient_syncs": syncs["count"] if syncs else None}
            (results / f"{name}.rank{context.rank}.json").write_text(json.dumps(report))
    finally:
        torch.set_num_threads(threads)
        if trainer is not None:
            trainer.close()


if __name__ == "__main__":  # one rank of the torchrun launch
    run_scenarios(TWO_RANKS, Path(sys.argv[1]))
    sys.exit(0)


import pytest  # noqa: E402 - the torchrun ranks above need neither pytest nor the test helpers
from safetensors.torch import load_file  # noqa: E402


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def write_old_optimizer_layout(checkpoint: Path, copy: Path) -> None:
    """`checkpoint` copied with its optimizer state in the layout of `optimizer.state_dict()`
    (parameters numbered in param-group order), as checkpoints were written before names."""
    import shutil

    shutil.copytree(checkpoint, copy)
    state = torch.load(copy / "optimizer.pt", weights_only=True)
    number = {name: i for i, name in enumerate(name for group in state["param_groups"] for name in group["params"])}
    numbered = {"state": {number[name]: value for name, value in state["state"].items()},
                "param_groups": [dict(group, params=[number[name] for name in group["params"]])
                                 for group in state["param_groups"]]}
    torch.save(numbered, copy / "optimizer.pt")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multirank")
    run_scenarios(SINGLE_RANK, folder)
    write_old_optimizer_layout(folder / "lm-one" / CHECKPOINT, folder / "lm-old-layout" / CHECKPOINT)
    launch_two_ranks(__file__, folder)
    run_scenarios(BACK_TO_ONE_RANK, folder)
    return folder


def launch_two_ranks(script: str, folder: Path) -> None:
    """`torchrun --nproc_per_node 2 script folder` (gloo on free ports, one thread per rank)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), script, str(folder)]
    launch = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=600)
    assert launch.returncode == 0, launch.stderr[-4000:]


def losses(run_dir: Path) -> dict[int, float]:
    """Training loss by step, from the run's metrics log."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if "loss" in record}


def weights(run_dir: Path, file: str = "model.safetensors", step: str = "step-000006") -> dict[str, torch.Tensor]:
    return load_file(run_dir / step / file)


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def assert_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)


def approx(values: dict[int, float]):
    return pytest.approx(values, rel=1e-5, abs=1e-6)


pytestmark = pytest.mark.slow


def test_openelm_under_fsdp2_on_two_ranks_matches_one_rank(results):
    one, two = losses(results / "lm-one"), losses(results / "lm-fsdp")
    assert sorted(one) == list(range(1, 7))
    assert two == approx(one)
    assert_close(weights(results / "lm-fsdp"), weights(results / "lm-one"))


def test_openelm_under_fsdp2_resumes_bit_identically(results):
    straight, resumed = losses(results / "lm-fsdp"), losses(results / "lm-fsdp-resumed")
    assert resumed == {step: straight[step] for step in (4, 5, 6)}
    for file in ("model.safetensors", "ema.safetensors"):
        assert_equal(weights(results / "lm-fsdp-resumed", file), weights(results / "lm-fsdp", file))


def test_ema_under_fsdp2_is_saved_whole_and_matches_one_rank(results):
    model = weights(results / "lm-fsdp")
    for step in (CHECKPOINT, "step-000006"):
        ema = weights(results / "lm-fsdp", "ema.safetensors", step)
        # Whole tensors, one per floating-point weight, shaped as the model's (not shards).
        assert {key: value.shape for key, value in ema.items()} == {key: model[key].shape for key in ema}
        assert_close(ema, weights(results / "lm-one", "ema.safetensors", step))
    assert not all(torch.equal(model[key], value) for key, value in weights(results / "lm-fsdp", "ema.safetensors").items())


def test_ddp_gradient_accumulation_on_two_ranks_matches_one_rank(results):
    assert losses(results / "lm-ddp-accum") == approx(losses(results / "lm-one"))
    assert_close(weights(results / "lm-ddp-accum"), weights(results / "lm-one"))
    reports = [json.loads((results / f"lm-ddp-accum.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0]["digest"] == reports[1]["digest"]  # the ranks' weights stayed identical
    # The model fits one gradient bucket: one all-reduce per step, none for the first micro-step.
    assert [report["gradient_syncs"] for report in reports] == [6, 6]


@pytest.mark.parametrize("run, source", [("lm-one-to-two", "1 rank -> 2 ranks (FSDP2)"),
                                         ("lm-two-to-one", "2 ranks (DDP, grad_accum 2) -> 1 rank")])
def test_resume_at_another_world_size_continues_the_same_curve(results, run, source):
    expected = losses(results / "lm-one")
    assert losses(results / run) == approx({step: expected[step] for step in (4, 5, 6)}), source
    assert_close(weights(results / run), weights(results / "lm-one"))
    assert_close(weights(results / run, "ema.safetensors"), weights(results / "lm-one", "ema.safetensors"))


def without_key_biases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Attention input biases without their key thirds. A key bias adds the same amount to every
    score of a query, which softmax ignores: its gradient is zero up to rounding, and Adam scales
    that rounding noise up to a full step, so it differs between any two summation orders."""
    kept = {}
    for key, value in state.items():
        if key.endswith("in_proj_bias"):
            width = value.shape[0] // 3
            value = torch.cat([value[:width], value[2 * width:]])  # queries, values
        kept[key] = value
    return kept


def test_an_optimizer_state_in_the_numbered_layout_resumes_under_fsdp2(results):
    assert losses(results / "lm-old-layout-to-two") == losses(results / "lm-one-to-two")
    assert_equal(weights(results / "lm-old-layout-to-two"), weights(results / "lm-one-to-two"))


def test_clip_trains_through_the_trainer_on_two_ranks_as_on_one(results):
    one, two = losses(results / "clip-one"), losses(results / "clip-two")
    assert sorted(one) == [1, 2] and two == approx(one)
    step = "step-000002"
    expected = without_key_biases(weights(results / "clip-one", step=step))
    actual = without_key_biases(weights(results / "clip-two", step=step))
    assert actual.keys() == expected.keys()
    for key in expected:  # CLIP's weights are ~1e-2: 1e-5 is far below one Adam step (lr 2e-3 x warm-up)
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-5, msg=key)
    digests = {json.loads((results / f"clip-two.rank{rank}.json").read_text())["digest"] for rank in (0, 1)}
    assert len(digests) == 1
