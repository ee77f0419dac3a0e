"""tools/layerwise_ablation.py without training: the t-test maths on fixed numbers (checked against
closed forms), the summary of a partial ablation, the resume rule (finished runs are skipped,
unfinished ones trained, each budget in its own folder) and bad arguments."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, snapshot

from toolkit.cli.common import run_cli

TOOL = Path(__file__).resolve().parents[2] / "tools" / "layerwise_ablation.py"
_spec = importlib.util.spec_from_file_location("layerwise_ablation", TOOL)
ablation = importlib.util.module_from_spec(_spec)
sys.modules["layerwise_ablation"] = ablation  # its dataclasses look their module up
_spec.loader.exec_module(ablation)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0, 2.5, 4.302652729749464, 10.0, -3.0])
def test_two_sided_p_with_two_degrees_of_freedom_matches_the_closed_form(t):
    # Student's t with df 2 has P(|T| >= t) = 1 - |t| / sqrt(2 + t^2).
    assert ablation.two_sided_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), abs=1e-12)


def test_two_sided_p_known_values():
    assert ablation.two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)  # Cauchy: atan(1) = pi / 4
    assert ablation.two_sided_p(2.0, 1) == pytest.approx(1 - 2 * math.atan(2.0) / math.pi, abs=1e-12)
    assert ablation.two_sided_p(2.7764451051977987, 4) == pytest.approx(0.05, abs=1e-10)
    assert ablation.two_sided_p(1.959963984540054, 1e7) == pytest.approx(0.05, abs=1e-6)  # the normal limit
    assert ablation.two_sided_p(math.inf, 3) == 0.0


def test_paired_comparison_on_fixed_numbers():
    result = ablation.compare([3.0, 3.1, 3.2], [3.1, 3.3, 3.3], paired=True)
    # differences 0.1, 0.2, 0.1: mean 2/15, std 1/sqrt(300), t = (2/15) / (std / sqrt 3) = 4
    assert result["n_pairs"] == 3 and result["df"] == 2
    assert result["mean_difference"] == pytest.approx(2 / 15, abs=1e-12)
    assert result["std_difference"] == pytest.approx(1 / math.sqrt(300), abs=1e-12)
    assert result["t"] == pytest.approx(4.0, abs=1e-9)
    assert result["p_two_sided"] == pytest.approx(1 - 4 / math.sqrt(18), abs=1e-9)


def test_welch_comparison_on_fixed_numbers():
    result = ablation.compare([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], paired=False)
    # means 2 and 4, variances 1 and 4: standard error sqrt(1/3 + 4/3), Welch df (5/3)^2 / (17/18)
    assert result["mean_difference"] == pytest.approx(2.0, abs=1e-12)
    assert result["t"] == pytest.approx(2 / math.sqrt(5 / 3), abs=1e-12)
    assert result["df"] == pytest.approx(50 / 17, abs=1e-12)
    assert result["pooled_seed_std"] == pytest.approx(math.sqrt(2.5), abs=1e-12)
    assert result["difference_in_seed_stds"] == pytest.approx(2 / math.sqrt(2.5), abs=1e-12)
    assert 0.2 < result["p_two_sided"] < 0.25  # between df 2 (0.261) and df 3 (0.219) at this t


def result(arm: str, seed: int, loss: float) -> dict:
    return {"arm": arm, "seed": seed, "val_loss": loss, "val_ce": loss - 0.01, "wall_s": 1.0}


def test_summary_pairs_only_the_seeds_both_arms_finished():
    results = [result("layerwise", 0, 3.0), result("uniform", 0, 3.1), result("layerwise", 1, 3.1),
               result("uniform", 1, 3.3), result("layerwise", 2, 3.2)]  # seed 2's uniform run is missing
    summary = ablation.summarise(results)
    loss = summary["metrics"]["val_loss"]
    assert loss["layerwise"]["n"] == 3 and loss["layerwise"]["mean"] == pytest.approx(3.1, abs=1e-12)
    assert loss["uniform"]["n"] == 2 and loss["uniform"]["std"] == pytest.approx(math.sqrt(0.02), abs=1e-12)
    assert loss["paired"]["n_pairs"] == 2 and loss["paired"]["mean_difference"] == pytest.approx(0.15, abs=1e-12)
    assert loss["welch"]["mean_difference"] == pytest.approx(3.2 - 3.1, abs=1e-12)
    assert summary["metrics"]["val_ce"]["paired"]["mean_difference"] == pytest.approx(0.15, abs=1e-12)
    text = ablation.markdown(summary, "cmd")
    assert "| uniform seed 1 | 3.3000 | 3.2900 | 1 |" in text
    assert "- paired by seed: difference +0.1500" in text


def fake_run_dir(run_dir: Path, max_steps: int, final: bool) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(f"trainer:\n  max_steps: {max_steps}\n  seed: 0\n")
    lines = [{"step": 2, "loss": 5.0}, {"step": 2, "val_loss": 9.9, "val_ce": 9.8}]
    if final:
        lines.append({"step": max_steps, "val_loss": 4.5, "val_ce": 4.4})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 3, "lo')


def test_finished_runs_are_skipped_and_unfinished_ones_trained(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "steps4"
    fake_run_dir(folder / "layerwise-seed0", 4, final=True)  # finished, result file never written
    fake_run_dir(folder / "uniform-seed0", 4, final=False)  # killed before its end
    (folder / "layerwise-seed1").mkdir(parents=True)
    (folder / "layerwise-seed1" / ablation.RESULT_FILE).write_text(json.dumps(result("layerwise", 1, 4.0)))
    trained = []

    def fake_train(run, settings, log_path):
        assert settings.steps == 4 and log_path.parent == folder / "logs"
        trained.append(run.name)
        return result(run.arm, run.seed, 4.25)

    monkeypatch.setattr(ablation, "train", fake_train)
    assert run_cli(ablation.main, ["--out", str(tmp_path), "--steps", "4", "--seeds", "0", "1"]) == 0
    assert trained == ["uniform-seed0", "uniform-seed1"]
    summary = json.loads((folder / "summary.json").read_text())
    by_run = {(r["arm"], r["seed"]): r["val_loss"] for r in summary["runs"]}
    assert by_run == {("layerwise", 0): 4.5, ("uniform", 0): 4.25, ("layerwise", 1): 4.0, ("uniform", 1): 4.25}
    assert summary["metrics"]["val_loss"]["paired"]["mean_difference"] == pytest.approx(0.0, abs=1e-12)
    assert (folder / "summary.md").read_text() == ablation.markdown(ablation.summarise(summary["runs"]),
                                                                  summary["command"])
    assert not list(folder.glob(".*"))  # no temporaries left by the atomic writes


def test_train_command_runs_the_real_cli_resumably():
    settings = ablation.Settings(Path("out"), (0,), 120, 15, 1)
    run = ablation.planned_runs(settings)[1]
    command = ablation.train_command(run, settings)
    assert Path(command[0]).name == "toolkit-train" and command[1] == "openelm/tiny_uniform"
    assert command[-2:] == ["--resume", "auto"]
    assert {"trainer.seed=0", "trainer.max_steps=120", "schedule.warmup_steps=15", "trainer.eval_every=0",
            "trainer.eval_batches=0", "trainer.threads=1",
            "trainer.out_dir=out/steps120-warmup15/uniform-seed0"} <= set(command)


@pytest.mark.parametrize("argv, fragment", [
    (["--seeds", "1", "1"], "--seeds: [1, 1] repeats a seed"),
    (["--steps", "0"], "--steps: must be positive"),
    (["--steps", "10", "--warmup-steps", "10"], "--warmup-steps: must be in [0, steps)"),
    (["--threads", "-1"], "--threads: must be >= 0"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, argv, fragment):
    before = snapshot(tmp_path)
    code = run_cli(ablation.main, ["--out", str(tmp_path / "out"), *argv])
    captured = capsys.readouterr()
    assert_one_line_error(subprocess.CompletedProcess(argv, code, captured.out, captured.err), fragment)
    assert snapshot(tmp_path) == before
