"""tools/compare_transfer.py: accuracy table from two runs' metrics, matched classes, clear errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from helpers import REPO

from toolkit.errors import ToolkitError

_spec = importlib.util.spec_from_file_location("compare_transfer", REPO / "tools" / "compare_transfer.py")
compare_transfer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_transfer)


def _run(directory, accuracies, init_from=None):
    directory.mkdir()
    lines = [{"step": step, "loss": 1.0, "accuracy": 0.5} for step in accuracies]
    lines += [{"step": step, "val_loss": 1.0, "val_accuracy": value} for step, value in accuracies.items()]
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    model = {"name": "transfer-vit", "init_from": str(init_from or ""), "head": "transfer"}
    (directory / "recipe.yaml").write_text(yaml.safe_dump({"model": model}))
    return directory


def test_compare_recomputes_matches_from_the_recipe(tmp_path, pretrained_run):
    transfer = _run(tmp_path / "transfer", {20: 0.5, 40: 0.625}, pretrained_run)
    random = _run(tmp_path / "random", {20: 0.25, 40: 0.5})
    text = compare_transfer.compare(transfer, random)
    assert "Transfer Init 62.50% vs random head 50.00% (+12.50 points)" in text
    assert "3 of 10 classes" in text
    assert "ankle boot   copied from boot.n.01 (pretrained row 3)" in text
    assert "sneaker      random (no WordNet synset)" in text
    assert "shirt        random (shirt.n.01 is not in the pretraining vocabulary)" in text


def test_compare_prefers_a_saved_transfer_init_json(tmp_path):
    transfer = _run(tmp_path / "transfer", {10: 0.75})
    report = {"init_from": "somewhere", "matched": 1, "classes": 1,
              "rows": [{"index": 0, "name": "dress", "synset": "dress.n.01", "vocabulary_row": 7, "copied": True}]}
    (transfer / "transfer_init.json").write_text(json.dumps(report))
    text = compare_transfer.compare(transfer, _run(tmp_path / "random", {10: 0.5}))
    assert "dress        copied from dress.n.01 (pretrained row 7)" in text


def test_compare_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="metrics.jsonl: no metrics log"):
        compare_transfer.compare(tmp_path / "empty", tmp_path / "empty")
    assert compare_transfer.main([str(tmp_path / "empty"), str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
