"""toolkit-train on the transfer recipe: a real (tiny) run, and bad input reported as one line."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import assert_one_line_error, run_command

RECIPE = "transfer/fashion_mnist.yaml"  # the transfer plugin's recipe
FASHION_FILE = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
TINY = ["data.image_size=16", "data.batch_size=8", "data.train_limit=32", "data.val_limit=24",
        "trainer.max_steps=2", "trainer.eval_every=0", "trainer.log_every=1", "trainer.precision=fp32",
        "trainer.peak_flops=1e11", "trainer.progress=false"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.skipif(not os.path.exists(FASHION_FILE), reason="Debian dataset-fashion-mnist not installed")
def test_transfer_recipe_trains_and_logs_val_accuracy(pretrained_run, tmp_path):
    out = tmp_path / "run"
    result = run_command(["toolkit-train", RECIPE, f"model.init_from={pretrained_run}", f"trainer.out_dir={out}",
                          *TINY], env=_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("accuracy" in record for record in records)
    (final,) = [record for record in records if "val_accuracy" in record]
    assert final["step"] == 2 and 0.0 <= final["val_accuracy"] <= 1.0
    assert json.loads((out / "classes.json").read_text())[9] == "ankle boot"
    # The model's own run file: which classes Transfer Init matched (the engine copies it).
    report = json.loads((out / "transfer_init.json").read_text())
    assert "dress" in json.dumps(report) and "dress.n.01" in json.dumps(report)
    assert (out / "step-000002" / "model.safetensors").is_file()


def test_missing_init_from_is_one_line(tmp_path):
    missing = tmp_path / "no-such-run"
    result = run_command(["toolkit-train", RECIPE, f"model.init_from={missing}", f"trainer.out_dir={tmp_path / 'o'}",
                          *TINY], env=_env(), cwd=tmp_path)
    assert_one_line_error(result, str(missing), "no such checkpoint or run directory")
    assert not (tmp_path / "o").exists()


def test_head_vocabulary_mismatch_is_one_line(pretrained_run, tmp_path):
    run = tmp_path / "bad-run"
    shutil.copytree(pretrained_run, run)
    entries = json.loads((run / "synsets.json").read_text())
    (run / "synsets.json").write_text(json.dumps(entries + entries[:2]))
    result = run_command(["toolkit-train", RECIPE, f"model.init_from={run}", f"trainer.out_dir={tmp_path / 'o'}",
                          *TINY], env=_env(), cwd=tmp_path)
    assert_one_line_error(result, "model.safetensors", str(run / "synsets.json"), "5 rows", "7 synsets")
    assert not (tmp_path / "o").exists()
