"""Run a sweep: check every cell's recipe, launch each cell under torchrun, keep the results CSV.

The CSV gets one row per finished cell, written atomically (the whole file replaced by a copy with
the new row) the moment the cell ends, so a sweep stopped at any point resumes where it was: cells
already in the CSV are skipped. A failed or out-of-memory cell is a row too, with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from toolkit.bench import cell as cell_worker
from toolkit.bench import measure
from toolkit.bench.sweep import NPROC_AXIS, Cell, Sweep, SweepError
from toolkit.errors import RecipeError
from toolkit.files import atomic_write_text, remove_path

RESULTS_FILE = "results.csv"
METRIC_COLUMNS = [
    "status", "reason", "precision", "parameters", "tokens_per_step", "repeats", "tokens_per_s",
    "tokens_per_s_std", "tokens_per_s_min", "tokens_per_s_max", "flops_per_token", "peak_tflops_per_device",
    "mfu", "measured_peak_tflops_per_device", "mfu_measured_peak", "peak_memory_mb", "memory_kind",
    "price_per_hour_per_device", "tokens_per_dollar", "loss_token_budget", "loss_at_budget", "loss_per_dollar",
]
# Keys every cell sets: bare steps, no checkpoints or evaluations, the matmul peak measured.
CELL_OVERRIDES = ["trainer.save_every=0", "trainer.eval_every=0", "trainer.progress=false", "trainer.peak_flops=0"]


@dataclass(frozen=True)
class PreparedCell:
    """A cell with what its recipe says: the steps to run and the precision its peak is read for."""

    cell: Cell
    total_steps: int
    precision: str
    tokens_per_step: int  # from data.batch_size x data.seq_len x grad_accum x nproc (0 if not an LM recipe)


def columns(sweep: Sweep) -> list[str]:
    return ["cell", "device", NPROC_AXIS, *[axis for axis in sweep.axes if axis != NPROC_AXIS], *METRIC_COLUMNS]


def prepare_cells(sweep: Sweep, registries: Any) -> list[PreparedCell]:
    """Every cell's recipe loaded and checked (a bad key fails here, before anything runs)."""
    from toolkit.recipe import load_recipe

    timed = sweep.warmup_steps + sweep.steps * sweep.repeats
    prepared = []
    for cell in sweep.cells():
        try:
            recipe = load_recipe(sweep.base, list(cell.overrides), registries)
        except RecipeError as error:
            raise SweepError(f"{sweep.source}: cell {cell.id}: {error.message}", hint=error.hint) from None
        precision = recipe.trainer.precision.value
        if precision not in sweep.peak_tflops[sweep.device]:
            raise SweepError(f"{sweep.source}: peak_tflops.{sweep.device}: no peak for precision {precision} "
                             f"(cell {cell.id})")
        data = recipe.values.get("data") or {}
        tokens = 0
        if isinstance(data.get("batch_size"), int) and isinstance(data.get("seq_len"), int):
            tokens = data["batch_size"] * data["seq_len"] * recipe.trainer.grad_accum * cell.nproc
        if sweep.loss_token_budget and not tokens:
            raise SweepError(f"{sweep.source}: loss_token_budget needs a recipe with data.batch_size and "
                             f"data.seq_len (cell {cell.id})")
        total = max(timed, measure.steps_for_budget(sweep.loss_token_budget, tokens))
        prepared.append(PreparedCell(cell, total, precision, tokens))
    return prepared


def finished_cells(path: Path, expected_columns: list[str], retry_failed: bool) -> dict[str, dict[str, str]]:
    """cell id -> its row, from a results CSV this sweep wrote (a CSV of other columns is an error)."""
    if not path.exists():
        return {}
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    header = next(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))), [])
    if header != expected_columns:
        raise SweepError(f"{path}: written by a sweep with other axes or columns",
                         hint="give this sweep its own --out directory")
    return {row["cell"]: row for row in rows if not (retry_failed and row["status"] != "ok")}


def write_row(path: Path, header: list[str], row: dict[str, Any], replace: str | None = None) -> None:
    """The CSV with `row` added (and the row of cell `replace` dropped), replaced atomically."""
    kept = []
    if path.exists():
        kept = [old for old in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))) if old["cell"] != replace]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows([*kept, {key: _cell_text(row.get(key)) for key in header}])
    atomic_write_text(path, buffer.getvalue())


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def launch_with_torchrun(cell_dir: Path, nproc: int, timeout_s: float,
                         program: tuple[str, ...] = ("-m", "toolkit.bench.cell")) -> dict[str, Any]:
    """Run the cell's ranks under torchrun; its result, or {status, reason} when it failed.

    `program` is what each rank runs with CELL_DIR as its argument (a test passes a script of its
    own that writes the same files)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *program, str(cell_dir)]
    log_path = cell_dir / "torchrun.log"
    with open(log_path, "w") as log:
        # A session of its own, so that a timeout (or Ctrl-C here) ends torchrun and every rank.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return {"status": "failed", "reason": f"timed out after {timeout_s:g} s (cell_timeout_s)"}
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    result_path = cell_dir / cell_worker.RESULT_FILE
    if code == 0 and result_path.exists():
        return json.loads(result_path.read_text())
    failures = [path for rank in range(nproc) if (path := cell_dir / cell_worker.failure_file(rank)).exists()]
    if failures:
        # The cause, not its echo: when one rank fails, the others fail next in their collectives
        # ("connection closed"), so an out-of-memory report wins, then the one written first.
        reports = [(json.loads(path.read_text()), path.stat().st_mtime_ns) for path in failures]
        return min(reports, key=lambda item: (item[0].get("status") != "oom", item[1]))[0]
    return {"status": "failed", "reason": f"torchrun exited {code}: {last_words(log_path.read_text(errors='replace'))}"}


def last_words(log: str) -> str:
    """Why a launch died when no rank could say: a rank killed by a signal (SIGKILL is most often
    the kernel's out-of-memory killer), else the log's last line that is not a rule."""
    killed = re.findall(r"Signal (\d+) \((SIG[A-Z]+)\) received by PID (\d+)", log)
    if killed:
        number, name, pid = killed[-1]
        hint = " (the out-of-memory killer, or a kill)" if name == "SIGKILL" else ""
        return f"a rank (pid {pid}) was killed by {name}{hint}"
    lines = [line.strip() for line in log.splitlines() if line.strip().strip("=-")]
    return lines[-1][:300] if lines else "no output"


def cell_row(sweep: Sweep, prepared: PreparedCell, outcome: dict[str, Any]) -> dict[str, Any]:
    """The CSV row of a cell: its axes, then the measured figures (or the failure and its reason)."""
    cell = prepared.cell
    price = sweep.prices[sweep.device]
    peak = sweep.peak_tflops[sweep.device][prepared.precision] * 1e12
    row: dict[str, Any] = {"cell": cell.id, "device": sweep.device, NPROC_AXIS: cell.nproc, **dict(cell.labels),
                           "precision": prepared.precision, "repeats": sweep.repeats,
                           "peak_tflops_per_device": peak / 1e12, "price_per_hour_per_device": price,
                           "loss_token_budget": sweep.loss_token_budget or None}
    row[NPROC_AXIS] = cell.nproc  # the count, where an `nproc` axis label put its text
    if outcome.get("status") != "ok":
        row.update(status=outcome.get("status", "failed"), reason=outcome.get("reason", "no reason given"))
        return row
    world = outcome["world_size"]
    rates = measure.window_throughputs(outcome["step_seconds"], outcome["step_tokens"], sweep.warmup_steps,
                                       sweep.steps, sweep.repeats)
    summary = measure.spread(rates)
    flops_per_token = outcome["flops_per_token"]
    measured_peak = outcome["measured_peak_flops_per_device"]
    row.update(status="ok", reason="", parameters=outcome["parameters"],
               tokens_per_step=outcome["step_tokens"][-1], tokens_per_s=summary.mean,
               tokens_per_s_std=summary.std, tokens_per_s_min=summary.low, tokens_per_s_max=summary.high,
               flops_per_token=flops_per_token or None, measured_peak_tflops_per_device=measured_peak / 1e12,
               peak_memory_mb=outcome["peak_memory_mb"], memory_kind=outcome["memory_kind"],
               tokens_per_dollar=measure.tokens_per_dollar(summary.mean, price, world))
    if flops_per_token:
        row["mfu"] = measure.model_flops_utilisation(flops_per_token, summary.mean, peak, world)
        row["mfu_measured_peak"] = measure.model_flops_utilisation(flops_per_token, summary.mean, measured_peak, world)
    if sweep.loss_token_budget:
        cumulative = 0.0
        for tokens, loss in zip(outcome["step_tokens"], outcome["losses"]):
            cumulative += tokens
            if cumulative >= sweep.loss_token_budget:
                row["loss_at_budget"] = loss
                row["loss_per_dollar"] = measure.loss_per_dollar(loss, sweep.loss_token_budget, summary.mean, price, world)
                break
    return row


Launcher = Callable[[Path, int, float], dict[str, Any]]


def run_sweep(sweep: Sweep, prepared: list[PreparedCell], out_dir: Path, progress: "CellProgress",
              launcher: Launcher = launch_with_torchrun, retry_failed: bool = False) -> Path:
    """Run every cell not yet in out_dir/results.csv; returns the CSV's path."""
    header = columns(sweep)
    results = out_dir / RESULTS_FILE
    done = finished_cells(results, header, retry_failed)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress.start(len(prepared), sum(item.cell.id in done for item in prepared))
    for item in prepared:
        if item.cell.id in done:
            continue
        cell_dir = out_dir / "cells" / hashlib.sha1(item.cell.id.encode()).hexdigest()[:12]
        remove_path(cell_dir)  # what an interrupted attempt left
        cell_dir.mkdir(parents=True)
        spec = {"recipe": sweep.base, "total_steps": item.total_steps,
                "overrides": [*item.cell.overrides, *CELL_OVERRIDES, f"trainer.max_steps={item.total_steps}",
                              f"trainer.out_dir={cell_dir / 'run'}"]}
        atomic_write_text(cell_dir / cell_worker.SPEC_FILE, json.dumps(spec, indent=1))
        outcome = launcher(cell_dir, item.cell.nproc, sweep.cell_timeout_s)
        row = cell_row(sweep, item, outcome)
        write_row(results, header, row, replace=item.cell.id)
        remove_path(cell_dir / "run")  # the scratch run directory; spec, result and log stay
        progress.finished(row)
    progress.close()
    return results


class CellProgress:
    """Progress over cells on stderr: a tqdm bar on a terminal, else one plain line per cell."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.total = self.count = 0

    def start(self, total: int, done: int) -> None:
        self.total, self.count = total, done
        if done:
            self.print(f"{done} of {total} cells already in the results; running the other {total - done}")
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="cell", file=self.stream, dynamic_ncols=True)

    def print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def finished(self, row: dict[str, Any]) -> None:
        self.count += 1
        self.print(f"cell {self.count}/{self.total} {row['cell']}: {describe_row(row)}")
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_row(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    text = (f"{row['tokens_per_s']:,.0f} tok/s (+- {row['tokens_per_s_std']:,.0f}), "
            f"{row['tokens_per_dollar']:.4g} tok/$, peak memory {row['peak_memory_mb']:,.0f} MB")
    if row.get("mfu") is not None:
        text += f", MFU {100 * row['mfu']:.1f}% (measured peak: {100 * row['mfu_measured_peak']:.1f}%)"
    return text


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
