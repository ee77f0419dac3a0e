"""tools/bench_flash_ffn.py --compute: both sources compute the same FFN outputs (the benchmark
asserts it token by token, and checks the first tokens against a torch reference), and a bad
flag combination is one line with nothing written."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from helpers import REPO, assert_error_output
from toolkit.cli.common import run_cli

pytest.importorskip("numba")  # --compute runs the fused kernel
TOOL = REPO / "tools" / "bench_flash_ffn.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_flash_ffn_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_compute_mode_runs_both_sources_to_the_same_outputs(tmp_path, capsys):
    arguments = ["--tokens", "6", "--window", "2", "--sources", "naive,ours-pread", "--compute", "--read-threads", "2",
                 "--scratch-mb", "8", "--cost-reads", "20", "--work-dir", str(tmp_path), "--check-tokens", "2"]
    assert run_cli(load_tool().main, arguments) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows_checked_tokens"] == 4  # two tokens, warm and cold, against the torch reference
    assert set(report["results"]) == {"warm/naive", "warm/ours-pread", "cold/naive", "cold/ours-pread"}
    assert report["results"]["cold/ours-pread"]["steady"]["hit_rate"] > 0
    assert report["cold_ours-pread_speedup_over_naive"] > 0


def test_compute_needs_float32(tmp_path, capsys):
    code = run_cli(load_tool().main, ["--compute", "--dtype", "bfloat16", "--work-dir", str(tmp_path / "work")])
    assert_error_output(code, capsys.readouterr().err, "--compute runs the fused kernel", "--dtype float32")
    assert not (tmp_path / "work").exists()
