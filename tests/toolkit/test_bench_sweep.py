"""toolkit-bench in this process: the sweep file and its grid, one-line errors for bad files, the
results CSV (failed cells recorded, resume, interruption), progress lines, figures, and one cell
run in-process on a single rank (the torchrun launches are in test_bench_torchrun.py)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import time

import pytest
import torch
import yaml

from helpers import assert_one_line_error
from toolkit.bench import cell as cell_worker
from toolkit.bench import cli as bench_cli
from toolkit.bench import figures
from toolkit.bench.runner import CellProgress, columns, launch_with_torchrun, prepare_cells, run_sweep
from toolkit.bench.sweep import SweepError, read_sweep
from toolkit.cli.common import run_cli
from toolkit.plugins import get_registries

TINY = {"model.num_layers": 1, "model.model_dim": 32, "model.head_dim": 8, "model.ffn_dim_divisor": 16,
        "data.seq_len": 16, "trainer.precision": "fp32", "trainer.threads": 1, "schedule.warmup_steps": 1}
SWEEP = {
    "base": "openelm/tiny.yaml", "device": "cpu-core", "overrides": TINY,
    "grid": {"data.batch_size": [2, 4],
             "strategy": {"ddp": {"dist.strategy": "ddp"},
                          "fsdp_grad_op": {"dist.strategy": "fsdp", "dist.reshard_after_forward": False}},
             "nproc": [1, 2]},
    "repeats": 2, "steps": 2, "warmup_steps": 1, "loss_token_budget": 64,
    "prices": {"cpu-core": 0.36}, "peak_tflops": {"cpu-core": {"fp32": 0.1}},
}


def write_sweep(tmp_path, **changes) -> str:
    values = {**SWEEP, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({key: value for key, value in values.items() if value is not None}, sort_keys=False))
    return str(path)


def test_the_grid_expands_to_cells_and_one_process_collapses_the_strategies(tmp_path):
    sweep = read_sweep(write_sweep(tmp_path))
    cells = sweep.cells()
    assert [cell.id for cell in cells] == [
        "data.batch_size=2;strategy=-;nproc=1",
        "data.batch_size=2;strategy=ddp;nproc=2",
        "data.batch_size=2;strategy=fsdp_grad_op;nproc=2",
        "data.batch_size=4;strategy=-;nproc=1",
        "data.batch_size=4;strategy=ddp;nproc=2",
        "data.batch_size=4;strategy=fsdp_grad_op;nproc=2",
    ]
    assert [cell.nproc for cell in cells] == [1, 2, 2, 1, 2, 2]
    assert cells[2].overrides[-3:] == ("data.batch_size=2", 'dist.strategy="fsdp"', "dist.reshard_after_forward=false")
    assert not any(item.startswith("dist.") for item in cells[0].overrides)  # one process wraps nothing
    assert read_sweep(write_sweep(tmp_path, device=None), device="cpu-core").device == "cpu-core"


def cli(argv, capsys) -> subprocess.CompletedProcess:
    code = run_cli(bench_cli.main_with_arguments, argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


@pytest.mark.parametrize(("changes", "fragments"), [
    ({"gird": {"nproc": [1]}}, ["unknown key 'gird'", "did you mean 'grid'?"]),
    ({"repeats": 0}, ["repeats: must be a whole number >= 1, got 0"]),
    ({"grid": {"batch": [2, 4]}}, ["grid.batch: a list of values needs a recipe key as its axis"]),
    ({"grid": {"nproc": [0]}}, ["grid.nproc: must be a whole number >= 1, got 0"]),
    ({"device": "h100"}, ["prices: has no entry for device 'h100'", "devices there: cpu-core"]),
    ({"grid": {"trainer.max_stepz": [1]}}, ["cell trainer.max_stepz=1:", "trainer.max_stepz: unknown key"]),
    ({"grid": {"model.attention": ["flash"]}}, ["cell model.attention=flash:", "attention must be one of"]),
    ({"peak_tflops": {"cpu-core": {"bf16": 0.2}}}, ["peak_tflops.cpu-core: no peak for precision fp32"]),
    ({"prices": {"cpu-core": -1}}, ["prices.cpu-core: must be a number > 0, got -1"]),
])
def test_a_bad_sweep_file_is_one_error_line_and_writes_nothing(tmp_path, capsys, changes, fragments):
    out = tmp_path / "out"
    result = cli([write_sweep(tmp_path, **changes), "--out", str(out)], capsys)
    assert_one_line_error(result, "sweep.yaml", *fragments)
    assert not out.exists()


def test_a_sweep_file_that_is_not_yaml_or_not_there(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid: [unclosed\n")
    assert_one_line_error(cli([str(broken), "--out", str(tmp_path / "out")], capsys), "broken.yaml: not valid YAML")
    assert_one_line_error(cli([str(tmp_path / "absent.yaml")], capsys), "sweep file not found", "--list-sweeps")
    assert not (tmp_path / "out").exists()


def fake_result(world_size: int, total_steps: int, tokens_per_step: int) -> dict:
    """A cell's raw figures: a 4-second warm-up step, then 1 s per step; losses 10, 9, 8, ..."""
    return {"status": "ok", "world_size": world_size, "device_name": "cpu", "precision": "fp32", "parameters": 1000,
            "step_seconds": [4.0] + [1.0] * (total_steps - 1), "step_tokens": [float(tokens_per_step)] * total_steps,
            "losses": [10.0 - step for step in range(total_steps)], "flops_per_token": 6e4,
            "peak_memory_mb": 500.0 + world_size, "memory_kind": "cpu_max_rss",
            "measured_peak_flops_per_device": 5e10}


class FakeLauncher:
    """Stands in for torchrun: records each launch and answers from `outcomes` (cell index -> dict),
    else a fake result; `interrupt_at` raises KeyboardInterrupt like Ctrl-C during that launch."""

    def __init__(self, prepared, outcomes=None, interrupt_at=None):
        self.prepared = {item.cell.id: item for item in prepared}
        self.outcomes = outcomes or {}
        self.interrupt_at = interrupt_at
        self.launched: list[str] = []

    def __call__(self, cell_dir, nproc, timeout_s):
        spec = json.loads((cell_dir / cell_worker.SPEC_FILE).read_text())
        # the runner names a cell's folder by the hash of its id
        cell_id = next(cid for cid in self.prepared if hashlib.sha1(cid.encode()).hexdigest()[:12] == cell_dir.name)
        index = len(self.launched)
        if index == self.interrupt_at:
            raise KeyboardInterrupt
        self.launched.append(cell_id)
        item = self.prepared[cell_id]
        return self.outcomes.get(index, fake_result(nproc, spec["total_steps"], item.tokens_per_step))


def read_csv(path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_cells_land_in_the_csv_failures_included_and_a_rerun_resumes(tmp_path):
    sweep = read_sweep(write_sweep(tmp_path, grid={"data.batch_size": [2, 4, 8], "nproc": [2]}))
    prepared = prepare_cells(sweep, get_registries())
    assert [item.tokens_per_step for item in prepared] == [64, 128, 256]  # batch x 16 tokens x 2 ranks
    assert [item.total_steps for item in prepared] == [5, 5, 5]  # 1 + 2 x 2; the 64-token budget fits
    out = tmp_path / "out"
    stream = io.StringIO()
    oom = {"status": "oom", "reason": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    launcher = FakeLauncher(prepared, outcomes={1: oom})
    results = run_sweep(sweep, prepared, out, CellProgress(stream), launcher=launcher)
    rows = read_csv(results)
    assert list(rows[0]) == columns(sweep)
    assert [row["status"] for row in rows] == ["ok", "oom", "ok"]
    assert rows[1]["reason"] == oom["reason"] and rows[1]["tokens_per_s"] == ""
    first = rows[0]
    # windows of 2 one-second steps of 64 tokens after the 4-second warm-up: 64 tokens/s, no spread
    assert float(first["tokens_per_s"]) == 64.0 and float(first["tokens_per_s_std"]) == 0.0
    assert float(first["mfu"]) == pytest.approx(6e4 * 64 / (0.1e12 * 2), rel=1e-5)
    assert float(first["mfu_measured_peak"]) == pytest.approx(6e4 * 64 / (5e10 * 2), rel=1e-5)
    assert float(first["tokens_per_dollar"]) == pytest.approx(64 / (0.36 * 2 / 3600), rel=1e-5)
    assert float(first["loss_at_budget"]) == 10.0  # the first step's 64 tokens reach the budget
    assert float(first["loss_per_dollar"]) == pytest.approx(10.0 / 64 * float(first["tokens_per_dollar"]), rel=1e-5)
    assert float(rows[2]["loss_at_budget"]) == 10.0
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("cell 1/3 data.batch_size=2;nproc=2: 64 tok/s (+- 0)")
    assert lines[1] == f"cell 2/3 data.batch_size=4;nproc=2: oom: {oom['reason']}"

    again = FakeLauncher(prepared)
    run_sweep(sweep, prepared, out, CellProgress(io.StringIO()), launcher=again)
    assert again.launched == []  # everything, the failed cell too, is already recorded
    retry = FakeLauncher(prepared)
    run_sweep(sweep, prepared, out, CellProgress(io.StringIO()), launcher=retry, retry_failed=True)
    assert retry.launched == ["data.batch_size=4;nproc=2"]
    assert [row["status"] for row in read_csv(results)] == ["ok", "ok", "ok"]


def test_an_interrupted_sweep_keeps_finished_cells_and_runs_only_the_rest(tmp_path):
    sweep = read_sweep(write_sweep(tmp_path, grid={"data.batch_size": [2, 4, 8], "nproc": [2]}))
    prepared = prepare_cells(sweep, get_registries())
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, prepared, out, CellProgress(io.StringIO()), launcher=FakeLauncher(prepared, interrupt_at=1))
    assert [row["cell"] for row in read_csv(out / "results.csv")] == ["data.batch_size=2;nproc=2"]
    stream = io.StringIO()
    rest = FakeLauncher(prepared)
    run_sweep(sweep, prepared, out, CellProgress(stream), launcher=rest)
    assert rest.launched == ["data.batch_size=4;nproc=2", "data.batch_size=8;nproc=2"]
    assert stream.getvalue().startswith("1 of 3 cells already in the results; running the other 2\n")
    assert len(read_csv(out / "results.csv")) == 3
    other = read_sweep(write_sweep(tmp_path, grid={"model.attention": ["matmul"]}))
    with pytest.raises(SweepError, match="written by a sweep with other axes or columns"):
        run_sweep(other, prepare_cells(other, get_registries()), out, CellProgress(io.StringIO()), launcher=rest)


def test_the_four_figures_are_drawn_from_the_csv(tmp_path, capsys):
    sweep = read_sweep(write_sweep(tmp_path))
    prepared = prepare_cells(sweep, get_registries())
    results = run_sweep(sweep, prepared, tmp_path / "out", CellProgress(io.StringIO()), launcher=FakeLauncher(prepared))
    plotted = cli(["--plot", str(results), "--out", str(tmp_path / "plots")], capsys)
    assert plotted.returncode == 0, plotted.stderr
    written = sorted((tmp_path / "plots" / "figures").iterdir())
    assert [path.name for path in written] == ["attention.png", "devices.png", "memory.png", "strategy.png"]
    assert plotted.stdout.splitlines() == [f"wrote {tmp_path / 'plots' / 'figures' / name}"
                                           for name in ("attention.png", "strategy.png", "memory.png", "devices.png")]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written)
    one_count = [row for row in figures.read_rows([results]) if row["nproc"] == "2"]
    assert figures.strategy_axis(one_count) == figures.BATCH  # one process count: strategies by batch
    assert figures.strategy_axis(figures.read_rows([results])) == figures.NPROC
    best = figures.best_points(figures.read_rows([results]), figures.MODEL, figures.STRATEGY, figures.NPROC)
    assert sorted(best["all"]) == ["-", "ddp", "fsdp_grad_op"]
    # DDP on 2 ranks, best over batch 2 and 4: batch 4's 128 tokens per 1-second step at 2 x $0.36/h
    assert best["all"]["ddp"] == [(2.0, pytest.approx(128 / (2 * 0.36 / 3600)))]


def run_cell_in_process(tmp_path, attention: str) -> tuple[int, object]:
    cell_dir = tmp_path / attention
    cell_dir.mkdir()
    overrides = [f"{key}={json.dumps(value)}" for key, value in TINY.items()]
    spec = {"recipe": "openelm/tiny.yaml", "total_steps": 3,
            "overrides": [*overrides, "data.batch_size=2", f"model.attention={attention}", "trainer.max_steps=3",
                          "trainer.peak_flops=1e11", "trainer.progress=false", f"trainer.out_dir={cell_dir / 'run'}"]}
    (cell_dir / cell_worker.SPEC_FILE).write_text(json.dumps(spec))
    threads = torch.get_num_threads()
    try:
        return cell_worker.main([str(cell_dir)]), cell_dir
    finally:
        torch.set_num_threads(threads)


def test_a_cell_on_one_rank_reports_its_raw_figures_or_its_failure(tmp_path, capsys):
    code, cell_dir = run_cell_in_process(tmp_path, "matmul")
    assert code == 0
    result = json.loads((cell_dir / cell_worker.RESULT_FILE).read_text())
    assert result["status"] == "ok" and result["world_size"] == 1 and result["precision"] == "fp32"
    assert result["step_tokens"] == [32.0, 32.0, 32.0] and len(result["step_seconds"]) == 3
    assert result["measured_peak_flops_per_device"] == 1e11  # trainer.peak_flops, when set, is the one used
    assert result["flops_per_token"] > 6 * result["parameters"] * 0.5 and result["peak_memory_mb"] > 0
    code, cell_dir = run_cell_in_process(tmp_path, "sdpa_efficient")
    assert code == 1
    failure = json.loads((cell_dir / cell_worker.failure_file(0)).read_text())
    assert failure["status"] == "failed" and "No viable backend" in failure["reason"]
    assert "\n" not in failure["reason"]
    assert "error: rank 0: RuntimeError: No viable backend" in capsys.readouterr().err


def fake_interpreter(tmp_path, monkeypatch, body: str) -> None:
    """The launcher runs `sys.executable -m torch.distributed.run ...`: stand a shell script in for it."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))


def test_a_launch_that_dies_without_a_word_is_recorded_with_its_last_line(tmp_path, monkeypatch):
    fake_interpreter(tmp_path, monkeypatch, "echo 'starting'; echo 'Segmentation fault' >&2; exit 139")
    outcome = launch_with_torchrun(tmp_path, 2, 60)
    assert outcome == {"status": "failed", "reason": "torchrun exited 139: Segmentation fault"}


def test_the_first_ranks_failure_is_the_reason_and_an_oom_beats_the_others(tmp_path, monkeypatch):
    def report(rank, status, reason, date):
        text = json.dumps({"status": status, "reason": reason})
        return f"echo '{text}' > {tmp_path / cell_worker.failure_file(rank)}; touch -d '{date}' {tmp_path / cell_worker.failure_file(rank)}"

    # rank 1 failed first; rank 0 failed after it, in the collective it was waiting in
    fake_interpreter(tmp_path, monkeypatch, "\n".join([
        report(0, "failed", "RuntimeError: Connection closed by peer", "2026-01-01 10:00:05"),
        report(1, "failed", "ValueError: the first cause", "2026-01-01 10:00:01"), "exit 1"]))
    assert launch_with_torchrun(tmp_path, 2, 60) == {"status": "failed", "reason": "ValueError: the first cause"}
    fake_interpreter(tmp_path, monkeypatch, "\n".join([
        report(0, "failed", "RuntimeError: Connection closed by peer", "2026-01-01 10:00:01"),
        report(1, "oom", "OutOfMemoryError: CUDA out of memory", "2026-01-01 10:00:05"), "exit 1"]))
    assert launch_with_torchrun(tmp_path, 2, 60) == {"status": "oom", "reason": "OutOfMemoryError: CUDA out of memory"}


def test_a_rank_killed_by_a_signal_is_named_as_such(tmp_path, monkeypatch):
    # the tail of torchrun's report when a rank is killed (the out-of-memory killer sends SIGKILL)
    report = ["[1]:", "  rank      : 1 (local_rank: 1)", "  exitcode  : -9 (pid: 4242)",
              "  traceback : Signal 9 (SIGKILL) received by PID 4242", "=" * 40]
    fake_interpreter(tmp_path, monkeypatch, "\n".join(f"echo '{line}'" for line in report) + "\nexit 1")
    outcome = launch_with_torchrun(tmp_path, 2, 60)
    assert outcome == {"status": "failed", "reason": "torchrun exited 1: a rank (pid 4242) was killed by SIGKILL "
                                                       "(the out-of-memory killer, or a kill)"}


def test_a_cell_past_its_timeout_is_stopped_with_its_processes(tmp_path, monkeypatch):
    marker = tmp_path / "child-finished"
    # A child of the launched process, as torchrun's ranks are: it must be killed too.
    fake_interpreter(tmp_path, monkeypatch, f"(sleep 1; touch {marker}) & sleep 30")
    outcome = launch_with_torchrun(tmp_path, 1, 0.5)
    assert outcome == {"status": "failed", "reason": "timed out after 0.5 s (cell_timeout_s)"}
    time.sleep(2)
    assert not marker.exists()


def test_out_of_memory_errors_are_classified_as_oom():
    assert cell_worker.classify(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))[0] == "oom"
    assert cell_worker.classify(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"))[0] == "oom"
    assert cell_worker.classify(RuntimeError("shape mismatch\nsecond line")) == ("failed", "RuntimeError: shape mismatch second line")


def test_the_shipped_sweeps_are_listed_and_valid(capsys):
    listed = cli(["--list-sweeps"], capsys)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["openelm/bench/cpu", "openelm/bench/paper_gpu"]
    registries = get_registries()
    cpu = read_sweep(bench_cli.find_sweep("openelm/bench/cpu", registries))
    assert len(prepare_cells(cpu, registries)) == 18 and {cell.nproc for cell in cpu.cells()} == {2}
    paper = read_sweep(bench_cli.find_sweep("openelm/bench/paper_gpu", registries), device="A100-40GB")
    # 4 sizes x 2 attentions x 5 batches x (3 strategies on 2, 4, 8 GPUs + 1 unwrapped on 1 GPU)
    assert len(paper.cells()) == 400 and paper.prices["A100-40GB"] == 1.0


def test_toolkit_train_points_a_sweep_file_at_toolkit_bench(capsys):
    from toolkit.cli import train as train_cli

    code = run_cli(train_cli.main_with_arguments, ["openelm/bench/cpu.yaml", "--dry-run"])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    assert_one_line_error(result, "a toolkit-bench sweep, not a recipe", "run it with toolkit-bench")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_cells_are_a_progress_bar_with_a_line_per_cell_above_it(tmp_path):
    sweep = read_sweep(write_sweep(tmp_path, grid={"data.batch_size": [2, 4], "nproc": [2]}))
    prepared = prepare_cells(sweep, get_registries())
    stream = Terminal()
    run_sweep(sweep, prepared, tmp_path / "out", CellProgress(stream), launcher=FakeLauncher(prepared))
    text = stream.getvalue()
    assert "cell 1/2 data.batch_size=2;nproc=2: 64 tok/s" in text and "cell 2/2 data.batch_size=4;nproc=2" in text
    assert "2/2 [" in text and "\r" in text  # tqdm's redrawn bar, at its end
