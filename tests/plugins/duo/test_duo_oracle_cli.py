"""`python -m plugins.duo.oracle_cli` on a trained tiny run: the JSON it writes, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from plugins.duo import oracle_cli
from plugins.duo.oracle import all_patterns, score_patterns
from plugins.duo.routers import BIG, CHOICE_NAMES
from toolkit.checkpoint import load_model
from toolkit.cli.common import run_cli

from helpers import assert_error_output, assert_unchanged, snapshot


def test_the_oracle_cli_writes_each_budgets_brute_force_best(tiny_run, tmp_path, capsys):
    out = tmp_path / "oracle.json"
    code = run_cli(oracle_cli.main_with_arguments, [str(tiny_run), "--out", str(out), "--sequences", "3"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(tiny_run / "step-000002")
    assert (report["sequences"], report["tokens_per_sequence"]) == (3, 16)
    assert (report["num_layers"], report["num_patterns"]) == (2, 9)
    # Brute force: score all 9 patterns on the same validation sequences, one at a time.
    loaded = load_model(tiny_run)
    input_ids, labels = oracle_cli.validation_sequences(loaded.recipe, 3)
    patterns = all_patterns(2, allow_skip=True)  # [9, 2]
    losses = torch.stack([score_patterns(loaded.model, input_ids, labels, pattern[None]).mean() for pattern in patterns])
    budgets = {entry["max_big"]: entry for entry in report["budgets"]}
    assert sorted(budgets) == [0, 1, 2]
    for max_big, entry in budgets.items():
        allowed = (patterns == BIG).sum(dim=1) <= max_big
        best = int(torch.where(allowed, losses, torch.inf).argmin())
        assert entry["best_pattern"] == [CHOICE_NAMES[int(code)] for code in patterns[best]]
        assert entry["loss"] == pytest.approx(float(losses[best]), rel=1e-5)
        assert f"max_big {max_big}: loss {entry['loss']:.4f} with {' '.join(entry['best_pattern'])}" in printed


@pytest.mark.parametrize("arguments, fragment", [
    (["--sequences", "0"], "--sequences must be >= 1, got 0"),
    (["--method", "beam", "--beam-width", "0"], "beam_width"),
])
def test_bad_oracle_cli_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, arguments, fragment):
    out = tmp_path / "oracle.json"
    before = snapshot(tmp_path, tiny_run)
    code = run_cli(oracle_cli.main_with_arguments, [str(tiny_run), "--out", str(out), *arguments])
    assert_error_output(code, capsys.readouterr().err, fragment)
    assert_unchanged(before, tmp_path, tiny_run)


def test_the_oracle_cli_refuses_a_run_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    code = run_cli(oracle_cli.main_with_arguments, [str(missing), "--out", str(tmp_path / "oracle.json")])
    assert_error_output(code, capsys.readouterr().err, str(missing))
    assert not (tmp_path / "oracle.json").exists()
