"""A run directory belongs to one run: refused, locked and checked before anything is written;
SIGTERM checkpoints; operating-system errors and closed pipes are clear."""

from __future__ import annotations

import fcntl
import json
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from helpers import EXAMPLE_RECIPE, run_command

SHORT = ["trainer.max_steps=20", "trainer.save_every=10", "trainer.eval_every=0", "trainer.peak_flops=1e12"]


def train(env, run: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={run}", *SHORT, *extra], env=env)


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and not p.name.startswith(".toolkit-train.lock")}


def one_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    return errors[0]


def test_a_fresh_run_refuses_a_directory_holding_a_run_and_overwrite_replaces_it(plugin_env, tmp_path):
    run = tmp_path / "run"
    assert train(plugin_env, run, "trainer.max_steps=30").returncode == 0
    before = snapshot(run)
    one_error(train(plugin_env, run), str(run), "already holds a run", "--resume auto", "--overwrite")
    assert snapshot(run) == before  # recipe, log and checkpoints untouched
    replaced = train(plugin_env, run, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000010", "step-000020"]  # step 30 is gone
    assert max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()) == 20


def test_resume_refuses_a_changed_recipe_naming_the_keys_unless_accepted(plugin_env, tmp_path):
    run = tmp_path / "run"
    assert train(plugin_env, run).returncode == 0
    before = snapshot(run)
    one_error(train(plugin_env, run, "optim.lr=0.5", "trainer.max_steps=25", "--resume", "auto"),
              "step-000020", "optim.lr", "trainer.max_steps", "--accept-changes")
    assert snapshot(run) == before
    accepted = train(plugin_env, run, "trainer.max_steps=25", "--resume", "auto", "--accept-changes")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert (run / "step-000025").is_dir() and "max_steps: 25" in (run / "recipe.yaml").read_text()


def test_resume_auto_in_an_empty_directory_says_it_starts_fresh(plugin_env, tmp_path):
    result = train(plugin_env, tmp_path / "new", "--resume", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "holds no checkpoint; starting a fresh run" in result.stderr


def test_resume_auto_over_a_run_that_never_saved_starts_fresh(plugin_env, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # died before its first save
    result = train(plugin_env, run, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replacing an earlier run there that saved none" in result.stderr
    assert '"loss": 9.0' not in (run / "metrics.jsonl").read_text()


def test_a_directory_in_use_is_refused(plugin_env, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".toolkit-train.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242\n")
        held.flush()
        one_error(train(plugin_env, run), "another training is using this run directory", "pid 4242")
    assert [p.name for p in run.iterdir()] == [".toolkit-train.lock"]


def test_an_unwritable_out_dir_is_one_line_before_anything_is_built(plugin_env, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    one_error(train(plugin_env, blocker / "run"), str(blocker / "run"), "cannot write the run directory")


def test_a_refused_resume_leaves_no_directory_behind(plugin_env, tmp_path):
    assert train(plugin_env, tmp_path / "a").returncode == 0
    before = snapshot(tmp_path / "a")
    # Another width, changes accepted: the weights no longer fit, found before anything is written.
    one_error(train(plugin_env, tmp_path / "b", "model.hidden=32", "--resume", str(tmp_path / "a"),
                    "--accept-changes"), "model.safetensors", "shape")
    assert not (tmp_path / "b").exists() and snapshot(tmp_path / "a") == before


def test_sigterm_saves_the_step_and_resume_finishes_like_an_uninterrupted_run(plugin_env, tmp_path):
    long = ["trainer.max_steps=3000", "trainer.save_every=0", "trainer.log_every=1"]
    straight = train(plugin_env, tmp_path / "straight", *long)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "stopped"
    command = [sys.executable, "-m", "toolkit.cli.train", str(EXAMPLE_RECIPE), f"trainer.out_dir={run}", *SHORT, *long]
    process = subprocess.Popen(command, env=plugin_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and (
            not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < 20):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "error: stopped by SIGTERM at step" in stderr and "--resume auto" in stderr
    saved = sorted(run.glob("step-*"))
    assert len(saved) == 1 and saved[0].name != "step-003000"
    resumed = train(plugin_env, run, *long, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(tmp_path / "straight" / "step-003000" / "model.safetensors")
    actual = load_file(run / "step-003000" / "model.safetensors")
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_a_closed_output_pipe_ends_quietly():
    process = subprocess.Popen([sys.executable, "-m", "toolkit.cli.plugins", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.read(1)
    process.stdout.close()  # as `| head -c 1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and "error" not in stderr, stderr


def logged(run: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row[key] for row in rows if key in row}


def test_an_accepted_optimizer_change_is_trained_with_not_just_recorded(plugin_env, tmp_path):
    # Half a run at lr 2e-2, resumed with lr 5e-3 and another weight decay: from step 10 on the
    # schedule must be the one an uninterrupted 5e-3 run follows, and the optimizer must hold the new
    # weight decay (the checkpoint's param groups carry the old values).
    new = ["optim.lr=5e-3", "optim.weight_decay=0.3", "trainer.log_every=1"]
    resumed, reference = tmp_path / "resumed", tmp_path / "reference"
    assert train(plugin_env, resumed, "trainer.max_steps=10", "trainer.log_every=1").returncode == 0
    result = train(plugin_env, resumed, *new, "--resume", "auto", "--accept-changes")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr 0.02 -> 0.005" in result.stderr and "weight_decay" in result.stderr
    assert train(plugin_env, reference, *new).returncode == 0
    after_resume = {step: lr for step, lr in logged(resumed, "lr").items() if step > 10}
    assert after_resume and after_resume == {step: lr for step, lr in logged(reference, "lr").items() if step > 10}
    def settings(run):
        groups = torch.load(run / "step-000020" / "optimizer.pt", weights_only=True)["param_groups"]
        return [{key: value for key, value in group.items() if key != "params"} for group in groups]
    assert settings(resumed) == settings(reference) and settings(resumed)[0]["weight_decay"] == 0.3


def test_a_moved_run_directory_resumes_without_accept_changes(plugin_env, tmp_path):
    # A run that saved at step 10 and died before step 20, then moved (trainer.out_dir differs).
    first = tmp_path / "first"
    assert train(plugin_env, first, "trainer.keep_last=0").returncode == 0
    shutil.rmtree(first / "step-000020")
    moved = first.rename(tmp_path / "moved")
    result = train(plugin_env, moved, "trainer.keep_last=0", "--resume", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "step-000010" in result.stderr and "replace the checkpoint" not in result.stderr
    assert (moved / "step-000020").is_dir()
