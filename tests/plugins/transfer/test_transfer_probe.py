"""The linear_probe evaluator: the converged probe, zero-shot Transfer Init, and the real toolkit-eval CLI."""

from __future__ import annotations

import json
import os

import torch
from helpers import assert_one_line_error, assert_unchanged, run_command, snapshot

from plugins.transfer.probe import fit_probe
from tests.plugins.transfer.conftest import write_fashion_root


def test_probe_fit_separates_separable_data_and_is_deterministic():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=generator) * 4  # [classes, D]
    targets = torch.arange(60) % 3  # [N]
    features = centres[targets] + torch.randn(60, 5, generator=generator) * 0.3  # [N, D]
    first = fit_probe(features, targets, 3, l2=1e-3, max_iterations=200)
    second = fit_probe(features, targets, 3, l2=1e-3, max_iterations=200)
    assert (first(features).argmax(1) == targets).all()
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


def _probe(run, root, out, *options):
    return run_command(["toolkit-eval", "linear_probe", "--model", str(run), f"root={root}", "train_limit=40",
                        "--output", str(out), "--batch-size", "5", "--no-progress", *options],
                       env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_toolkit_eval_writes_probe_and_zero_shot_results(pretrained_run, tmp_path):
    root = write_fashion_root(tmp_path / "fashion", train=40, val=13)
    result = _probe(pretrained_run, root, tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    metrics = results["metrics"]
    assert printed["accuracy"] == metrics["accuracy"]
    assert metrics["train_images"] == 40 and metrics["feature_dim"] == 24
    # The fixture vocabulary holds dress, coat and boot: three classes start from pretrained rows.
    assert metrics["matched_classes"] == ["dress->dress.n.01", "coat->coat.n.01", "ankle boot->boot.n.01"]
    assert metrics["zero_shot_chance"] == 1 / 3
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [sample["target"] for sample in samples] == [index % 10 for index in range(13)]
    with_zero_shot = [sample for sample in samples if "zero_shot" in sample]
    assert [sample["target"] for sample in with_zero_shot] == [3, 4, 9]  # images 3, 4 and 9 of 13
    assert all(sample["zero_shot"] in (3, 4, 9) for sample in with_zero_shot)
    assert metrics["zero_shot_images"] == 3
    # The scores are exactly the fraction of the per-sample predictions that hit.
    assert metrics["accuracy"] == sum(sample["predicted"] == sample["target"] for sample in samples) / 13
    assert metrics["zero_shot_accuracy"] == sum(sample["zero_shot"] == sample["target"] for sample in with_zero_shot) / 3


def test_random_tower_is_its_own_model(pretrained_run, tmp_path):
    root = write_fashion_root(tmp_path / "fashion", train=40, val=13)
    pretrained = _probe(pretrained_run, root, tmp_path / "a")
    random = _probe(pretrained_run, root, tmp_path / "b", "tower=random")
    assert pretrained.returncode == 0 and random.returncode == 0, random.stderr
    identities = [json.loads((tmp_path / name / "results.json").read_text())["model_identity"] for name in "ab"]
    assert identities[0].endswith("tower=pretrained") and identities[1].endswith("tower=random seed=0")
    metrics = json.loads((tmp_path / "b" / "results.json").read_text())["metrics"]
    samples = [json.loads(line) for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert "zero_shot_accuracy" not in metrics
    assert metrics["accuracy"] == sum(sample["predicted"] == sample["target"] for sample in samples) / len(samples)


def test_bad_input_is_one_line_and_writes_nothing(pretrained_run, tmp_path):
    root = write_fashion_root(tmp_path / "fashion")
    missing = tmp_path / "no-such-run"
    before = snapshot(tmp_path, pretrained_run)  # the inputs are only read, and no output appears
    assert_one_line_error(_probe(missing, root, tmp_path / "out"), str(missing))
    assert_one_line_error(_probe(pretrained_run, root, tmp_path / "out", "tower=imagenet"), "tower")
    assert_one_line_error(_probe(pretrained_run, tmp_path / "empty", tmp_path / "out"), "Fashion-MNIST file not found")
    assert_unchanged(before, tmp_path, pretrained_run)
