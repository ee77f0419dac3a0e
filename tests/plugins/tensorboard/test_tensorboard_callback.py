"""The tensorboard callback, driven through the Callback contract and read back with EventAccumulator.

Metric values are chosen to be exact in float32 (TensorBoard stores scalars as float32), so every
comparison is `==`: a value written to the wrong tag or step fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugins.tensorboard import TensorBoardCallback, TensorBoardConfig, build_tensorboard
from toolkit.engine.callbacks import RunInfo
from toolkit.errors import PluginError, RecipeError
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

STEP_METRICS = {
    1: {"step": 1, "loss": 2.5, "lr": 0.0078125, "tokens_per_s": 4096.0, "step_time_s": 0.25,
        "mfu": 0.375, "grad_norm": 1.5, "accuracy": 0.125},
    2: {"step": 2, "loss": 2.25, "lr": 0.015625, "tokens_per_s": 8192.0, "step_time_s": 0.125,
        "mfu": 0.5, "grad_norm": 0.75, "accuracy": 0.25},
    3: {"step": 3, "loss": 2.0, "lr": 0.03125, "tokens_per_s": 2048.0, "step_time_s": 0.5,
        "mfu": 0.25, "grad_norm": 0.5, "accuracy": 0.375},
}


def run_info(run_dir: Path, rank: int = 0, start_step: int = 0, max_steps: int = 3,
             item_unit: str = "tokens") -> RunInfo:
    return RunInfo(run_dir=run_dir, rank=rank, world_size=2, start_step=start_step,
                   max_steps=max_steps, item_unit=item_unit)


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in `log_dir` as (step, value) pairs, after TensorBoard's own purging."""
    accumulator = event_accumulator.EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_step_and_validation_metrics_are_written_with_their_steps_and_values(tmp_path):
    callback = build_tensorboard(TensorBoardConfig())
    callback.on_train_start(run_info(tmp_path))
    for step, metrics in STEP_METRICS.items():
        callback.on_step_end(step, metrics)
    callback.on_evaluate(2, {"step": 2, "val_loss": 2.375, "val_ppl": 10.75, "val_accuracy": 0.5})
    callback.on_save(3, tmp_path / "step-000003")
    callback.on_train_end(3, {"loss": 2.0})

    scalars = read_scalars(tmp_path / "tensorboard")
    names = ["loss", "lr", "tokens_per_s", "step_time_s", "mfu", "grad_norm", "accuracy"]
    assert sorted(scalars) == sorted([f"train/{name}" for name in names] + ["val/loss", "val/ppl", "val/accuracy"])
    for name in names:
        assert scalars[f"train/{name}"] == [(step, metrics[name]) for step, metrics in STEP_METRICS.items()]
    assert scalars["val/loss"] == [(2, 2.375)]
    assert scalars["val/ppl"] == [(2, 10.75)]
    assert scalars["val/accuracy"] == [(2, 0.5)]


def test_throughput_tag_follows_the_item_unit_and_optional_metrics_stay_absent(tmp_path):
    callback = build_tensorboard(TensorBoardConfig())
    callback.on_train_start(run_info(tmp_path, max_steps=1, item_unit="images"))
    # No clipping (no grad_norm) and no FLOPs estimate (no mfu): those curves must not appear.
    callback.on_step_end(1, {"loss": 1.25, "lr": 0.5, "images_per_s": 96.0, "step_time_s": 2.0})
    callback.on_train_end(1, {})

    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars == {"train/loss": [(1, 1.25)], "train/lr": [(1, 0.5)],
                       "train/images_per_s": [(1, 96.0)], "train/step_time_s": [(1, 2.0)]}


def test_every_n_steps_plus_the_last_step(tmp_path):
    callback = build_tensorboard(TensorBoardConfig(every=2))
    callback.on_train_start(run_info(tmp_path, max_steps=5))
    for step in range(1, 6):
        callback.on_step_end(step, {"loss": float(step)})
    callback.on_evaluate(3, {"val_loss": 0.5})  # evaluations are never thinned
    callback.on_train_end(5, {})

    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [(2, 2.0), (4, 4.0), (5, 5.0)]
    assert scalars["val/loss"] == [(3, 0.5)]


class RecordingWriter:
    """Stands in for SummaryWriter to see what the callback asks of it, and when."""

    def __init__(self, **options) -> None:
        self.options = options
        self.calls: list[tuple] = []

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.calls.append(("add_scalar", tag, value, global_step))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def close(self) -> None:
        self.calls.append(("close",))


def test_writer_options_flush_on_save_and_close_at_train_end(tmp_path):
    callback = build_tensorboard(TensorBoardConfig(flush_secs=7.5))
    callback._writer_class = RecordingWriter
    callback.on_train_start(run_info(tmp_path, start_step=2))
    writer = callback.writer
    assert writer.options == {"log_dir": str(tmp_path / "tensorboard"), "purge_step": 3, "flush_secs": 7.5}
    callback.on_step_end(3, {"loss": 3.5})
    callback.on_save(3, tmp_path / "step-000003")
    callback.on_train_end(3, {"loss": 3.5})
    assert writer.calls == [("add_scalar", "train/loss", 3.5, 3), ("flush",), ("close",)]
    callback.on_train_end(3, {})  # a second end is harmless: the writer is already closed
    assert writer.calls[-1] == ("close",) and len(writer.calls) == 3


def test_explicit_log_dir(tmp_path):
    log_dir = tmp_path / "elsewhere" / "tb"
    callback = build_tensorboard(TensorBoardConfig(log_dir=str(log_dir)))
    callback.on_train_start(run_info(tmp_path / "run", max_steps=1))
    callback.on_step_end(1, {"loss": 0.75})
    callback.on_train_end(1, {})

    assert read_scalars(log_dir) == {"train/loss": [(1, 0.75)]}
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_non_main_rank_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    callback = build_tensorboard(TensorBoardConfig())
    callback.on_train_start(run_info(run_dir, rank=1))
    for step, metrics in STEP_METRICS.items():
        callback.on_step_end(step, metrics)
    callback.on_evaluate(3, {"val_loss": 1.0})
    callback.on_save(3, run_dir / "step-000003")
    callback.on_train_end(3, {})
    assert list(tmp_path.rglob("*")) == [run_dir]


def test_resume_purges_what_the_earlier_run_wrote_after_the_checkpoint(tmp_path):
    first = build_tensorboard(TensorBoardConfig())
    first.on_train_start(run_info(tmp_path, max_steps=5))
    for step in range(1, 6):
        first.on_step_end(step, {"loss": float(step)})
        if step == 3:
            first.on_evaluate(3, {"val_loss": 30.0})
            first.on_save(3, tmp_path / "step-000003")
    first.on_evaluate(5, {"val_loss": 50.0})
    first.on_train_end(5, {})

    # TensorBoard reads a directory's event files in name order, and names start with the
    # creation second: a real resume is always later, so make this one too.
    time.sleep(1.05 - time.time() % 1.0)
    second = build_tensorboard(TensorBoardConfig())
    second.on_train_start(run_info(tmp_path, start_step=3, max_steps=5))
    for step in (4, 5):
        second.on_step_end(step, {"loss": step + 0.5})
    second.on_evaluate(5, {"val_loss": 5.5})
    second.on_train_end(5, {})

    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    scalars = read_scalars(tmp_path / "tensorboard")
    # Steps up to the checkpoint come from the first run; the first run's steps 4 and 5 are gone.
    assert scalars["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5), (5, 5.5)]
    assert scalars["val/loss"] == [(3, 30.0), (5, 5.5)]


def _hide_tensorboard(monkeypatch) -> None:
    """Make `import tensorboard` fail as it does when the package is not installed."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name in list(sys.modules):
        if name.startswith("tensorboard.") or name.startswith("torch.utils.tensorboard"):
            monkeypatch.delitem(sys.modules, name)


def test_missing_tensorboard_is_a_plugin_error_with_the_install_hint(monkeypatch):
    _hide_tensorboard(monkeypatch)
    with pytest.raises(PluginError) as caught:
        build_tensorboard(TensorBoardConfig())
    assert "tensorboard" in caught.value.message
    assert "pip install tensorboard" in caught.value.one_line()


def test_the_plugin_imports_without_tensorboard():
    """Every run loads every plugin, so the plugin itself must not need tensorboard."""
    code = ("import sys; sys.modules['tensorboard'] = None; import plugins.tensorboard; "
            "assert not any(name.startswith('torch.utils.tensorboard') for name in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("options", [{"every": 0}, {"flush_secs": 0.0}])
def test_bad_config_is_a_recipe_error(options):
    with pytest.raises(RecipeError):
        build_tensorboard(TensorBoardConfig(**options))


def test_registered_and_enabled_from_a_recipe(tmp_path):
    registries = get_registries()
    component = registries["callbacks"].get("tensorboard")
    assert component.plugin == "tensorboard" and component.config_class is TensorBoardConfig

    recipe_path = tmp_path / "with_tensorboard.yaml"
    recipe_path.write_text("base: openelm/tiny.yaml\ncallbacks:\n  - name: tensorboard\n    every: 10\n")
    recipe = load_recipe(str(recipe_path), [], registries)
    assert [spec.config for spec in recipe.callbacks] == [TensorBoardConfig(every=10)]
    callback = recipe.callbacks[0].build()
    assert isinstance(callback, TensorBoardCallback) and callback.config.every == 10

    # The README's way to add it without editing the recipe; the tiny recipe enables none.
    assert load_recipe("openelm/tiny.yaml", [], registries).callbacks == []
    overridden = load_recipe("openelm/tiny.yaml", ["callbacks=[{name: tensorboard, every: 20}]"], registries)
    assert [spec.config for spec in overridden.callbacks] == [TensorBoardConfig(every=20)]


def test_a_real_run_writes_every_step_and_each_evaluation(plugin_env, tmp_path):
    """Through toolkit-train: the trainer calls the callback's events, rank 0 writes them."""
    import json

    from helpers import EXAMPLE_RECIPE, run_command

    run = tmp_path / "run"
    result = run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={run}", "trainer.max_steps=6",
                          "trainer.eval_every=3", "trainer.log_every=1", "trainer.peak_flops=1e12",
                          "callbacks=[{name: tensorboard}]"], env=plugin_env)
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(run / "tensorboard")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([loss for _, loss in train_losses], rel=1e-6)
    assert [step for step, _ in scalars["val/loss"]] == [3, 6]
    assert "train/samples_per_s" in scalars and "train/lr" in scalars
