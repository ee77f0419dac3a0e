"""What a run prints: the header, plain progress lines off a terminal, the bar (and a validation bar)
on one, and nothing on ranks but 0. One real `toolkit-train` run with stderr piped, as a CI or
cluster log gets it, is shared by the CLI tests; the rest train the example plugin's tiny model in
this process.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pytest

from helpers import EXAMPLE_RECIPE, run_command
from toolkit.cli import train as train_cli
from toolkit.cli.common import run_cli
from toolkit.config import TrainerConfig
from toolkit.engine.console import RunConsole
from toolkit.progress import LineProgress, clock, short_count

STEP_LINE = re.compile(r"^step (\d+)/(\d+) \| loss (\S+) \| ([\d,]+) samples/s \| lr (\S+) \| eta \d+:\d\d:\d\d$")


@pytest.fixture(scope="module")
def piped_run(example_plugin_dir, tmp_path_factory):
    """`toolkit-train` on the example recipe with the bar asked for, stderr a pipe: (run dir, result)."""
    out_dir = tmp_path_factory.mktemp("piped") / "run"
    # Only the plugins the recipe uses: importing every family (torchvision too) would double the time.
    env = dict(os.environ, PYTHONPATH=str(example_plugin_dir), OMP_NUM_THREADS="1", TOOLKIT_PLUGINS="example,optim")
    result = run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={out_dir}", "trainer.progress=true",
                          "trainer.progress_every_s=0", "trainer.max_steps=20", "trainer.eval_every=10", "trainer.save_every=10",
                          "trainer.peak_flops=1e12"], env=env)
    assert result.returncode == 0, result.stderr
    return out_dir, result


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_piped_run_prints_a_header(piped_run):
    out_dir, result = piped_run
    lines = result.stderr.splitlines()
    assert lines[:5] == [
        f"run directory: {out_dir}",
        "starting at step 0 of 20",
        "model: WaveMLP, 257 parameters, trained",
        "data: 1,024 training examples, 64 steps per epoch; 256 validation examples in 16 batches per rank",
        "precision fp32, 1 process on cpu, grad_accum 1",
    ]
    assert result.stdout.splitlines() == [f"done: step 20, val_loss {records(out_dir)[-1]['val_loss']:.4g}; "
                                          f"checkpoint {out_dir / 'step-000020'}"]


def test_a_piped_run_prints_plain_lines_instead_of_a_bar(piped_run):
    out_dir, result = piped_run
    assert "\r" not in result.stderr
    logged = {record["step"]: record for record in records(out_dir) if "loss" in record}
    printed = [STEP_LINE.match(line) for line in result.stderr.splitlines() if STEP_LINE.match(line)]
    assert [int(match[1]) for match in printed] == [10, 20]
    for match in printed:  # the figures are the ones metrics.jsonl holds for that step
        record = logged[int(match[1])]
        assert match[3] == f"{record['loss']:.4f}" and match[5] == f"{record['lr']:.3g}"
        assert match[4] == f"{record['samples_per_s']:,.0f}"
    validations = {record["step"]: record["val_loss"] for record in records(out_dir) if "val_loss" in record}
    for step, val_loss in validations.items():
        assert f"step {step}: validation (16 batches)" in result.stderr
        assert re.search(rf"^step {step}: val_loss {val_loss:.4g} \(\d+\.\d s\)$", result.stderr, re.MULTILINE)


def train_here(out_dir: Path, *arguments: str) -> None:
    """`toolkit-train` on the example recipe, run in this process (stderr is whatever sys.stderr is)."""
    code = run_cli(train_cli.main_with_arguments,
                   [str(EXAMPLE_RECIPE), f"trainer.out_dir={out_dir}", "trainer.peak_flops=1e12", *arguments])
    assert code == 0


def test_a_resumed_run_says_what_it_resumed_from(plugin_env, piped_run, tmp_path, capsys):
    checkpoint = piped_run[0] / "step-000010"
    train_here(tmp_path, "trainer.max_steps=20", "trainer.progress=false", "--resume", str(checkpoint),
               "--accept-changes")
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == [f"run directory: {tmp_path}", f"resumed from: {checkpoint} (step 10 of 20)"]
    assert [int(STEP_LINE.match(line)[1]) for line in lines if STEP_LINE.match(line)] == [20]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_runs_and_validation_has_its_own(plugin_env, tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train_here(tmp_path, "trainer.max_steps=20", "trainer.progress=true", "trainer.eval_every=10")
    text = terminal.getvalue()
    assert "\r" in text and "validation:" in text  # the step bar and the validation bar
    assert f"run directory: {tmp_path}" in text
    assert not any(STEP_LINE.match(line) for line in re.split(r"[\r\n]", text))
    assert re.search(r"step 10: val_loss \S+ \(", text)


def console_lines(progress_every_s: float, enabled: bool = True, steps: int = 50) -> list[str]:
    stream = io.StringIO()
    config = TrainerConfig(max_steps=steps, log_every=10, progress=False, progress_every_s=progress_every_s)
    console = RunConsole(config, enabled, "tokens", stream=stream)
    console.start(["header"], 0)
    for step in range(1, steps + 1):
        console.step({"step": step, "loss": 1.0, "lr": 0.001, "tokens_per_s": 1000.0})
    for _ in console.validation(range(4), 0, steps):
        pass
    console.validated({"step": steps, "val_loss": 0.5}, 1.0)
    console.close()
    return stream.getvalue().splitlines()


def test_plain_lines_come_every_log_every_steps_or_at_most_every_progress_every_s():
    every = console_lines(progress_every_s=0)
    assert [line.split("/")[0] for line in every if STEP_LINE.match(line.replace("tokens", "samples"))] == [
        "step 10", "step 20", "step 30", "step 40", "step 50"]
    assert every[-2:] == ["step 50: validation (4 batches)", "step 50: val_loss 0.5 (1.0 s)"]
    throttled = console_lines(progress_every_s=1e9)  # never due again: the first line and the last step
    assert [line.split("/")[0] for line in throttled if line.startswith("step ") and "/" in line] == [
        "step 10", "step 50"]


def test_ranks_but_the_first_print_nothing():
    assert console_lines(progress_every_s=0, enabled=False) == []


def test_counts_and_clock_read_plainly():
    assert [short_count(value) for value in (12, 1234, 4_901_504, 1.08e9)] == ["12", "1.23K", "4.90M", "1.08B"]
    assert clock(83.4) == "0:01:23" and clock(3 * 3600 + 5) == "3:00:05"


def test_evaluation_progress_off_a_terminal_is_plain_throttled_lines():
    now = [0.0]
    stream = io.StringIO()
    with LineProgress(100, initial=10, desc="samples", every_s=30, stream=stream, timer=lambda: now[0]) as bar:
        for _ in range(9):  # 10 samples every 5 s: a line at 30 s and 60 s, and the last one
            now[0] += 5
            bar.update(10)
    lines = stream.getvalue().splitlines()
    assert lines == ["samples: 10/100 (10%)", "samples: 70/100 (70%), 2/s, eta 0:00:15",
                     "samples: 100/100 (100%), 2/s"]
    assert "\r" not in stream.getvalue()
