"""The engine on the example third-party plugin: accumulation, resume, NaN, bf16, EMA, CLI errors."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import EXAMPLE_RECIPE, assert_one_line_error, assert_unchanged, run_command, snapshot
from toolkit.assembly import build_trainer
from toolkit.errors import TrainingError
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe


def train(out_dir: Path, *overrides: str, resume: str | None = None):
    recipe = load_recipe(str(EXAMPLE_RECIPE), [f"trainer.out_dir={out_dir}", "trainer.peak_flops=1e12", *overrides],
                         get_registries())
    trainer = build_trainer(recipe, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def losses(run_dir: Path, key: str = "loss") -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in records if key in r]


def test_gradient_accumulation_matches_a_bigger_batch(plugin_env, tmp_path):
    train(tmp_path / "big", "data.batch_size=32", "trainer.log_every=1", "trainer.max_steps=20")
    train(tmp_path / "accum", "data.batch_size=16", "trainer.grad_accum=2", "trainer.log_every=1", "trainer.max_steps=20")
    assert losses(tmp_path / "big") == pytest.approx(losses(tmp_path / "accum"), rel=1e-5, abs=1e-6)


def test_resume_is_bit_identical(plugin_env, tmp_path):
    train(tmp_path / "straight")
    interrupted = tmp_path / "interrupted"
    train(interrupted)
    for later in ("step-000040", "step-000060"):
        for file in (interrupted / later).iterdir():
            file.unlink()
        (interrupted / later).rmdir()
    result = train(interrupted, resume="auto")
    assert result.step == 60
    straight = load_file(tmp_path / "straight" / "step-000060" / "model.safetensors")
    resumed = load_file(interrupted / "step-000060" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert losses(tmp_path / "straight") == losses(interrupted)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(plugin_env, tmp_path):
    with pytest.raises(TrainingError, match="loss became nan at step 25") as caught:
        train(tmp_path, "task.nan_at_step=25", "trainer.save_every=10")
    assert "step-000020" in caught.value.hint
    assert [p.name for p in sorted(tmp_path.glob("step-*"))] == ["step-000010", "step-000020"]


def test_bf16_and_ema(plugin_env, tmp_path):
    result = train(tmp_path, "trainer.precision=bf16", "trainer.ema_decay=0.1")
    assert result.final_metrics["val_loss"] < 0.3
    ema = load_file(tmp_path / "step-000060" / "ema.safetensors")
    weights = load_file(tmp_path / "step-000060" / "model.safetensors")
    assert set(ema) == set(weights) and not torch.equal(ema["layers.0.weight"], weights["layers.0.weight"])


def test_metrics_log_and_recipe_saved(plugin_env, tmp_path):
    train(tmp_path)
    saved = (tmp_path / "recipe.yaml").read_text()
    assert f"out_dir: {tmp_path}" in saved and "name: wave-mlp" in saved
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s"} <= set(records[0])
    assert [r["step"] for r in records if "val_loss" in r] == [20, 40, 60]


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["trainer.max_stepz=3"], ["trainer.max_stepz: unknown key", "did you mean 'max_steps'"]),
        (["trainer.max_steps=lots"], ["trainer.max_steps"]),
        (["model.name=wave-mpl"], ["unknown model 'wave-mpl'", "wave-mlp"]),
        (["--resume", "NOT_A_CHECKPOINT"], ["no such checkpoint"]),
        (["task.nan_at_step=3"], ["loss became nan at step 3", "last good checkpoint"]),
    ],
)
def test_cli_bad_input_is_one_line(plugin_env, tmp_path, arguments, fragments):
    (tmp_path / "NOT_A_CHECKPOINT").mkdir()
    result = run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={tmp_path / 'run'}", *arguments],
                         env=plugin_env, cwd=tmp_path)
    if arguments[0] == "--resume":
        fragments = ["NOT_A_CHECKPOINT: not a checkpoint"]
    assert_one_line_error(result, *fragments)
    if arguments[0] != "task.nan_at_step=3":  # that run trains (and saves) until the loss fails
        assert not (tmp_path / "run").exists()
        assert not list((tmp_path / "NOT_A_CHECKPOINT").iterdir())


def test_cli_missing_recipe(tmp_path):
    before = snapshot(tmp_path)
    result = run_command(["toolkit-train", str(tmp_path / "missing.yaml")], cwd=tmp_path)
    assert_one_line_error(result, "recipe file not found", "missing.yaml")
    assert_unchanged(before, tmp_path)


def test_sigkill_then_resume_auto_is_bit_identical(plugin_env, tmp_path):
    """Kill -9 at a random moment of a run that saves often, resume, compare with a clean run."""
    overrides = ["trainer.max_steps=1500", "trainer.save_every=25", "trainer.eval_every=0", "trainer.log_every=50"]
    clean = run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={tmp_path / 'clean'}", *overrides],
                        env=plugin_env)
    assert clean.returncode == 0, clean.stderr
    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "toolkit.cli.train", str(EXAMPLE_RECIPE), f"trainer.out_dir={killed_dir}", *overrides]
    process = subprocess.Popen(command, env=plugin_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(killed_dir.glob("step-*")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = sorted(killed_dir.glob("step-*"))
    assert checkpoints and checkpoints[-1].name != "step-001500", "the run finished before it could be killed"
    resumed = run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={killed_dir}", *overrides,
                           "--resume", "auto"], env=plugin_env)
    assert resumed.returncode == 0, resumed.stderr
    expected = load_file(tmp_path / "clean" / "step-001500" / "model.safetensors")
    actual = load_file(killed_dir / "step-001500" / "model.safetensors")
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_validation_metrics_are_item_weighted_and_logged(plugin_env, tmp_path):
    recipe = load_recipe(str(EXAMPLE_RECIPE), [f"trainer.out_dir={tmp_path}", "trainer.peak_flops=1e12",
                                                 "trainer.max_steps=2"], get_registries())
    trainer = build_trainer(recipe)
    sizes: list[int] = []
    original = trainer.task.validation_step

    def with_metrics(model, batch):
        output = original(model, batch)
        sizes.append(output.items)
        output.metrics = {"ones": torch.tensor(1.0), "batch_items": float(output.items)}
        return output

    trainer.task.validation_step = with_metrics
    try:
        record = trainer.evaluate()
    finally:
        trainer.close()
    assert record["val_ones"] == pytest.approx(1.0)
    assert record["val_batch_items"] == pytest.approx(sum(n * n for n in sizes) / sum(sizes))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["val_ones"] == pytest.approx(1.0)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_keys(plugin_env, tmp_path):
    train(tmp_path / "eager", "trainer.max_steps=6", "trainer.log_every=1")
    train(tmp_path / "compiled", "trainer.max_steps=6", "trainer.log_every=1", "trainer.compile=true")
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4, abs=1e-5)
    eager = load_file(tmp_path / "eager" / "step-000006" / "model.safetensors")
    compiled = load_file(tmp_path / "compiled" / "step-000006" / "model.safetensors")
    assert sorted(compiled) == sorted(eager)  # no torch.compile `_orig_mod.` prefixes
