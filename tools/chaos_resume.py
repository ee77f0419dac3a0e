"""Fault injection for training runs: random SIGKILLs (during saves too), a full disk, a NaN loss.

A run whose model draws random numbers (CatLIP's tiny ViT with dropout on, fed by the CatLIP data
path with its random crops and flips) first trains uninterrupted: the reference. Then each trial
starts the same run into a fresh directory through the real CLI (`toolkit-train`), kills it at a
random moment (after a random delay, while a checkpoint is being written, just as one is renamed
into place, or with a SIGTERM), resumes it with `--resume auto`, perhaps kills it again, and so on
until it finishes; its final weights must equal the reference's bit for bit. After every kill
the directory is checked: every checkpoint that was complete before the kill is still there or
was pruned by `keep_last` (at least that many newer ones exist), and the newest one, which is what
`--resume auto` picks, is complete. A launch that outlives `--timeout` counts as hung.

Two more scenarios each start from a run killed as its first checkpoint appeared:
  - disk full: a resume under RLIMIT_FSIZE (smaller than the weights file), so the next save
    fails: one `error:` line, exit 2, no traceback, the earlier checkpoint byte-identical and no
    temporary left; a resume without the limit then finishes with the reference's weights;
  - NaN: a resume with `--accept-changes schedule.warmup_init_lr=1e30 trainer.save_every=0` (the
    schedule is read from the recipe on resume, so the next update's learning rate is absurd and
    the loss after it is not finite): one `error:` line naming the loss and the last good
    checkpoint, exit 2; that checkpoint byte-identical; a plain resume finishes exactly.

`--measure-save` instead times the engine's save (`Trainer.save`: gathering the state, writing,
fsyncing and renaming) for the tiny OpenELM recipe, in process.

    python tools/chaos_resume.py --trials 20 [--work DIR] [--seed 0]
    python tools/chaos_resume.py --measure-save

Progress goes to stderr; the last line on stdout is JSON:
{"trials": N, "exact": K, "lost_checkpoints": L, "hung": H, "disk_full_ok": ..., "nan_ok": ..., ...}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RECIPE = "catlip/tiny.yaml"
# Small enough to run many times on a shared 2-core machine; dropout makes the model draw random
# numbers, and the data path draws its crops and flips.
OVERRIDES = ["model.dropout=0.1", "data.batch_size=16", "trainer.eval_every=0", "trainer.eval_batches=1",
             "trainer.log_every=1", "trainer.progress=false", "trainer.threads=1"]
KILL_MODES = ("save", "delay", "rename", "delay", "term")  # the first kill of trial i: KILL_MODES[i % 5]
POLL_SECONDS = 0.003


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Settings:
    recipe: str
    overrides: list[str]
    max_steps: int
    save_every: int
    keep_last: int
    timeout_s: float
    work: Path

    def command(self, out_dir: Path, resume: bool, extra: tuple[str, ...] = ()) -> list[str]:
        executable = shutil.which("toolkit-train", path=str(Path(sys.executable).parent)) or shutil.which("toolkit-train")
        if executable is None:
            sys.exit("error: toolkit-train is not on PATH (pip install -e . in this environment)")
        command = [executable, self.recipe, *self.overrides, f"trainer.out_dir={out_dir}",
                   f"trainer.max_steps={self.max_steps}", f"trainer.save_every={self.save_every}",
                   f"trainer.keep_last={self.keep_last}", *extra]
        return command + (["--resume", "auto"] if resume else [])


@dataclass
class Launch:
    """One process of the CLI and what became of it."""

    returncode: int | None = None
    seconds: float = 0.0
    killed: str = ""  # the fault injected ("" = none: it ran to its end)
    hung: bool = False
    stderr: str = ""
    observed: set[int] = field(default_factory=set)  # checkpoint steps seen complete while it ran


def checkpoint_steps(run_dir: Path) -> set[int]:
    if not run_dir.is_dir():
        return set()
    return {int(name[5:]) for name in os.listdir(run_dir) if name.startswith("step-") and name[5:].isdigit()}


def has_temporary(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(name.startswith(".tmp-step-") for name in os.listdir(run_dir))


def run_once(settings: Settings, out_dir: Path, resume: bool, mode: str = "", delay: float = 0.0,
             extra: tuple[str, ...] = (), file_size_limit: int = 0) -> Launch:
    """Start the CLI; inject `mode` (delay | save | rename | term | "" for none); wait for it to end."""
    launch = Launch()
    log_path = settings.work / "logs" / f"{out_dir.name}-{int(time.time() * 1000)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def limit_file_size() -> None:  # in the child, before exec: every file it writes is capped
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    before = checkpoint_steps(out_dir)
    started = time.monotonic()
    with open(log_path, "w") as stderr:
        process = subprocess.Popen(settings.command(out_dir, resume, extra), stdout=subprocess.DEVNULL,
                                   stderr=stderr, start_new_session=True,
                                   preexec_fn=limit_file_size if file_size_limit else None)
        while process.poll() is None:
            elapsed = time.monotonic() - started
            present = checkpoint_steps(out_dir)
            launch.observed |= present
            fire = (mode == "delay" and elapsed >= delay) or (mode == "term" and elapsed >= delay) or \
                   (mode == "save" and has_temporary(out_dir)) or (mode == "rename" and bool(present - before))
            if fire:
                os.killpg(process.pid, signal.SIGTERM if mode == "term" else signal.SIGKILL)
                process.wait()
                # A kill during a save shows as the temporary checkpoint it left behind.
                launch.killed, mode = mode + ("(mid-save)" if mode == "save" and has_temporary(out_dir) else ""), ""
            if elapsed > settings.timeout_s:
                os.killpg(process.pid, signal.SIGKILL)
                launch.hung, launch.killed = True, "timeout"
                process.wait()
                break
            time.sleep(POLL_SECONDS)
        launch.returncode = process.wait()
    launch.seconds = time.monotonic() - started
    launch.observed |= checkpoint_steps(out_dir)
    launch.stderr = log_path.read_text()
    return launch


def lost_checkpoints(run_dir: Path, ever_seen: set[int], keep_last: int) -> list[int]:
    """Checkpoints seen complete that are gone although fewer than `keep_last` newer ones exist,
    plus the newest one when it is not complete (what --resume auto would then fail on)."""
    from toolkit import checkpoint as ckpt
    from toolkit.errors import ToolkitError

    present = checkpoint_steps(run_dir)
    lost = [step for step in sorted(ever_seen - present)
            if len([newer for newer in present if newer > step]) < keep_last]
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None:
        try:
            ckpt.resolve_checkpoint(latest)
        except ToolkitError:
            lost.append(ckpt.checkpoint_step(latest))
    return lost


def same_weights(path: Path, reference: dict) -> bool:
    from safetensors.torch import load_file

    weights = load_file(path)
    return weights.keys() == reference.keys() and all(
        weights[key].dtype == reference[key].dtype and weights[key].shape == reference[key].shape
        and bool((weights[key] == reference[key]).all()) for key in reference)


def loss_curve(run_dir: Path) -> list[tuple]:
    """(step, loss, lr) of every training line of the metrics log: a resumed run's log must hold
    each step once, with the reference's values."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"], r["lr"]) for r in records if "loss" in r]


def final_weights(settings: Settings, run_dir: Path) -> Path:
    return run_dir / f"step-{settings.max_steps:06d}" / "model.safetensors"


def one_error_line(launch: Launch) -> bool:
    lines = launch.stderr.splitlines()
    return launch.returncode == 2 and sum(line.startswith("error:") for line in lines) == 1 and \
        not any("Traceback" in line for line in lines)


def run_trial(settings: Settings, index: int, rng: random.Random, reference: dict, reference_curve: list,
              reference_seconds: float, max_kills: int) -> dict:
    """Kill and resume one run until it finishes; its outcome."""
    out_dir = settings.work / f"trial-{index:02d}"
    kills_planned = rng.randint(1, max_kills)
    outcome = {"trial": index, "kills": [], "lost": [], "hung": False, "exact": False, "error": ""}
    ever_seen: set[int] = set()
    resume = False
    for _ in range(kills_planned + 3):  # every planned kill, then runs to the end
        kills_done = len(outcome["kills"])
        mode = (KILL_MODES[index % len(KILL_MODES)] if kills_done == 0 else rng.choice(KILL_MODES)) \
            if kills_done < kills_planned else ""
        delay = rng.uniform(0.1, 1.0) * reference_seconds
        launch = run_once(settings, out_dir, resume, mode, delay)
        ever_seen |= launch.observed
        if launch.hung:
            outcome["hung"] = True
            outcome["error"] = f"launch {kills_done + 1} outlived {settings.timeout_s:.0f} s"
            break
        if launch.killed:
            outcome["kills"].append(f"{launch.killed}@{launch.seconds:.1f}s")
            expected = {0, -signal.SIGKILL} if not launch.killed.startswith("term") else {0, 128 + signal.SIGTERM, -signal.SIGTERM}
            if launch.returncode not in expected:
                outcome["error"] = f"after {launch.killed}: exit {launch.returncode}: {launch.stderr.strip()[-300:]}"
                break
        elif launch.returncode != 0:
            outcome["error"] = f"exit {launch.returncode}: {launch.stderr.strip()[-300:]}"
            break
        outcome["lost"] += lost_checkpoints(out_dir, ever_seen, settings.keep_last)
        if launch.returncode == 0:
            outcome["exact"] = same_weights(final_weights(settings, out_dir), reference)
            outcome["temporaries_left"] = has_temporary(out_dir)
            outcome["log_exact"] = loss_curve(out_dir) == reference_curve
            break
        resume = True
    if not outcome["error"] and not outcome["exact"] and final_weights(settings, out_dir).exists():
        outcome["error"] = "final weights differ from the reference"
    return outcome


def hash_checkpoint(checkpoint: Path) -> dict[str, str]:
    return {file.name: hashlib.sha256(file.read_bytes()).hexdigest() for file in sorted(checkpoint.iterdir())}


def killed_after_first_checkpoint(settings: Settings, name: str) -> Path:
    """A run directory whose run was SIGKILLed as its first checkpoint appeared."""
    out_dir = settings.work / name
    launch = run_once(settings, out_dir, resume=False, mode="rename")
    if launch.killed != "rename" or not checkpoint_steps(out_dir):
        raise RuntimeError(f"could not kill {out_dir} after its first checkpoint: {launch.stderr[-300:]}")
    return out_dir


def fault_then_resume(settings: Settings, name: str, reference: dict, reference_curve: list,
                      extra: tuple[str, ...] = (), disk_full: bool = False, expect: str = "") -> dict:
    """Kill a run after its first checkpoint, resume it under a fault (arguments, a file-size limit
    below half the weights file's size), check it fails cleanly leaving the checkpoint it started
    from untouched, then resume it plainly to the end."""
    out_dir = killed_after_first_checkpoint(settings, name)
    newest = out_dir / f"step-{max(checkpoint_steps(out_dir)):06d}"
    hashes = hash_checkpoint(newest)
    file_size_limit = (newest / "model.safetensors").stat().st_size // 2 if disk_full else 0
    faulty = run_once(settings, out_dir, resume=True, extra=extra, file_size_limit=file_size_limit)
    error_lines = [line for line in faulty.stderr.splitlines() if line.startswith("error:")]
    result = {
        "file_size_limit": file_size_limit, "exit": faulty.returncode, "seconds": round(faulty.seconds, 1), "hung": faulty.hung,
        "error_line": error_lines[0] if error_lines else faulty.stderr.strip()[-300:],
        "one_error_line": one_error_line(faulty),
        "names_fault": expect.lower() in (error_lines[0].lower() if error_lines else ""),
        "names_last_checkpoint": bool(error_lines) and str(newest) in error_lines[0],
        "checkpoint_intact": newest.is_dir() and hash_checkpoint(newest) == hashes,
        "no_temporary": not has_temporary(out_dir),
        "no_new_checkpoint": max(checkpoint_steps(out_dir)) == int(newest.name[5:]),
    }
    plain = run_once(settings, out_dir, resume=True)
    result["resume_exit"] = plain.returncode
    result["resume_exact"] = plain.returncode == 0 and same_weights(final_weights(settings, out_dir), reference)
    result["resume_log_exact"] = plain.returncode == 0 and loss_curve(out_dir) == reference_curve
    result["ok"] = not faulty.hung and faulty.returncode == 2 and all(result[key] for key in (
        "one_error_line", "names_fault", "names_last_checkpoint", "checkpoint_intact", "no_temporary",
        "no_new_checkpoint", "resume_exact", "resume_log_exact"))
    return result


def measure_save(repeats: int) -> dict:
    """Seconds per `Trainer.save` of the tiny OpenELM (after real steps, so the optimizer holds state)."""
    from toolkit.assembly import assemble
    from toolkit.engine.trainer import Trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    with tempfile.TemporaryDirectory() as out_dir:
        recipe = load_recipe("openelm/tiny.yaml", [f"trainer.out_dir={out_dir}", "trainer.peak_flops=1e12",
                                                   "trainer.progress=false", "trainer.keep_last=2"], get_registries())
        trainer = Trainer(assemble(recipe))
        batches = iter(trainer.parts.train_data)
        seconds = []
        for _ in range(repeats):
            trainer.run_step(batches)
            trainer.progress.step += 1
            started = time.perf_counter()
            checkpoint = trainer.save()
            seconds.append(time.perf_counter() - started)
        size = sum(file.stat().st_size for file in checkpoint.iterdir())
        trainer.close()
    return {"save_seconds_median": round(statistics.median(seconds), 3), "save_seconds_max": round(max(seconds), 3),
            "saves": repeats, "checkpoint_mb": round(size / 1e6, 1), "all_s": [round(s, 3) for s in seconds]}


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-kills", type=int, default=3, help="kills per trial: 1 to this many, at random")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument("--keep-last", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one launch may take before it counts as hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a fresh temporary one)")
    parser.add_argument("--skip-faults", action="store_true", help="only the kill trials (no disk-full, no NaN)")
    parser.add_argument("--measure-save", action="store_true", help="time the tiny OpenELM's save instead")
    parser.add_argument("--save-repeats", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    if arguments.measure_save:
        print(json.dumps(measure_save(arguments.save_repeats)))
        return 0
    from safetensors.torch import load_file

    started = time.monotonic()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="chaos-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(RECIPE, OVERRIDES, arguments.max_steps, arguments.save_every, arguments.keep_last,
                        arguments.timeout, work)
    log(f"work directory {work}; reference run: {RECIPE} {' '.join(OVERRIDES)}")
    reference_run = run_once(settings, work / "reference", resume=False)
    if reference_run.returncode != 0:
        sys.exit(f"error: the reference run failed: {reference_run.stderr.strip()[-500:]}")
    reference = load_file(final_weights(settings, work / "reference"))
    reference_curve = loss_curve(work / "reference")
    log(f"reference: {reference_run.seconds:.1f} s for {settings.max_steps} steps")
    rng = random.Random(arguments.seed)
    outcomes = []
    for index in range(arguments.trials):
        outcome = run_trial(settings, index, rng, reference, reference_curve, reference_run.seconds,
                            arguments.max_kills)
        outcomes.append(outcome)
        log(f"trial {index}: kills {', '.join(outcome['kills'])}; exact {outcome['exact']}; "
            f"log exact {outcome.get('log_exact', False)}; lost {outcome['lost']}; hung {outcome['hung']}{'; ' + outcome['error'] if outcome['error'] else ''}")
    summary = {"trials": len(outcomes), "exact": sum(o["exact"] for o in outcomes),
               "lost_checkpoints": sum(len(o["lost"]) for o in outcomes), "hung": sum(o["hung"] for o in outcomes),
               "kills": sum(len(o["kills"]) for o in outcomes),
               # a planned kill whose moment came after the run had finished: such a trial had no fault
               "trials_without_kill": sum(not o["kills"] for o in outcomes),
               "kills_by_mode": {mode: sum(k.split("@")[0].startswith(mode) for o in outcomes for k in o["kills"])
                                 for mode in sorted(set(KILL_MODES))},
               "kills_mid_save": sum("(mid-save)" in k for o in outcomes for k in o["kills"]),
               "logs_exact": sum(o.get("log_exact", False) for o in outcomes),
               "temporaries_left": sum(o.get("temporaries_left", False) for o in outcomes),
               "reference_seconds": round(reference_run.seconds, 1)}
    if not arguments.skip_faults:
        disk_full = fault_then_resume(settings, "disk-full", reference, reference_curve, disk_full=True,
                                      expect="could not save the checkpoint")
        log(f"disk full: {json.dumps(disk_full)}")
        nan = fault_then_resume(settings, "nan", reference, reference_curve, expect="loss became",
                                extra=("schedule.warmup_init_lr=1e30", "trainer.save_every=0", "--accept-changes"))
        log(f"NaN: {json.dumps(nan)}")
        summary.update(disk_full_ok=disk_full["ok"], disk_full_seconds=disk_full["seconds"], nan_ok=nan["ok"],
                       nan_seconds=nan["seconds"], hung=summary["hung"] + disk_full["hung"] + nan["hung"])
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
