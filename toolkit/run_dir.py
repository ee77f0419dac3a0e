"""A run directory belongs to one run: claimed, locked and checked before anything is built.

`claim_run_directory` runs before the model and data are built and writes nothing but the lock:
  - a fresh run refuses a directory that already holds a run (checkpoints, a metrics log or a
    recipe) unless told to overwrite it, and then clears that run only once the new one has
    been checked;
  - a resume (`--resume auto|DIR`) compares the checkpoint's recipe with the one given and
    refuses a changed key unless told to accept changes, naming the keys;
  - `--resume auto` in a directory with no checkpoint says that it starts fresh (replacing the
    log and recipe of a run that died before its first save);
  - an exclusive lock keeps a second training out of a directory in use;
  - a directory that cannot be created or written is one clear error, not a failure after the
    model and data were built.
The engine writes the resolved recipe and the run's files only after the state is restored.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from toolkit import checkpoint as ckpt
from toolkit.errors import CheckpointError, RecipeError, TrainingError

LOCK_FILE = ".toolkit-train.lock"
RUN_MARKERS = ("metrics.jsonl", "recipe.yaml")  # with step-NNNNNN/: what makes a directory a run's
# Keys a resume may change freely: how a run is shown, never what it computes, and where its
# directory is (a run moved to another disk and resumed there is the same run).
KEYS_FREE_ON_RESUME = {"trainer.progress", "trainer.progress_every_s", "trainer.threads", "trainer.log_every",
                       "trainer.out_dir"}


@dataclass
class RunClaim:
    run_dir: Path
    resume_from: Path | None  # the checkpoint to continue from
    clear_previous: bool  # a fresh run over an old one (--overwrite): clear it once the new one is built
    created: bool = False  # the directory did not exist before this claim
    lock: IO | None = field(default=None, repr=False)

    def release(self, failed: bool = False) -> None:
        """Unlock; after a failure, remove the directory again if this claim made it and it holds
        nothing but the lock (a refused run leaves nothing behind)."""
        if self.lock is None:
            return
        self.lock.close()
        self.lock = None
        if failed and self.created and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            (self.run_dir / LOCK_FILE).unlink()
            self.run_dir.rmdir()


def holds_a_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and (any(ckpt.list_checkpoints(run_dir)) or
                                 any((run_dir / marker).exists() for marker in RUN_MARKERS))


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: values}


def changed_keys(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Recipe keys whose values differ between a checkpoint's recipe and the one given."""
    before, after = flatten(saved), flatten(given)
    keys = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    return [key for key in keys if key not in KEYS_FREE_ON_RESUME]


def _lock(run_dir: Path) -> IO:
    handle = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise TrainingError(f"{run_dir}: another training is using this run directory ({holder})",
                            hint="wait for it to finish, or choose another trainer.out_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _make_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise TrainingError(f"{run_dir}: cannot write the run directory ({error.strerror or error})",
                            hint="choose another trainer.out_dir") from error


def _resume_checkpoint(run_dir: Path, resume: str) -> Path | None:
    if resume != "auto":
        return ckpt.resolve_checkpoint(resume)
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        return None
    return ckpt.resolve_checkpoint(latest)


def claim_run_directory(recipe_values: dict[str, Any], run_dir: Path, resume: str | None, is_main: bool,
                        overwrite: bool = False, accept_changes: bool = False) -> RunClaim:
    """Check and lock `run_dir` for this run (see the module docstring); raises a ToolkitError."""
    if resume is not None and overwrite:
        raise RecipeError("--resume and --overwrite contradict each other", hint="choose one")
    resume_from = _resume_checkpoint(run_dir, resume) if resume is not None else None
    starting_over = resume == "auto" and resume_from is None
    if starting_over and is_main:  # what a job script that always says --resume auto gets first
        leftovers = " (replacing an earlier run there that saved none)" if holds_a_run(run_dir) else ""
        print(f"note: {run_dir} holds no checkpoint; starting a fresh run{leftovers}", file=sys.stderr)
    if resume_from is not None:
        changes = changed_keys(ckpt.read_recipe(resume_from), recipe_values)
        if changes and not accept_changes:
            shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise CheckpointError(f"{resume_from}: the recipe differs from the checkpoint's in {shown}",
                                  hint="resume with the same recipe, or add --accept-changes to continue "
                                       "with the new values")
    elif holds_a_run(run_dir) and not overwrite and not starting_over:
        raise TrainingError(f"{run_dir}: already holds a run", hint="continue it with --resume auto, replace it "
                            "with --overwrite, or choose another trainer.out_dir")
    if not is_main:  # rank 0 owns the directory
        return RunClaim(run_dir, resume_from, clear_previous=False)
    created = not run_dir.exists()
    _make_writable(run_dir)
    lock = _lock(run_dir)
    return RunClaim(run_dir, resume_from, clear_previous=resume_from is None and holds_a_run(run_dir),
                    created=created, lock=lock)


def clear_previous_run(run_dir: Path) -> None:
    """Remove an earlier run's checkpoints, log and recipe (for --overwrite, once the new run is built)."""
    for checkpoint in ckpt.list_checkpoints(run_dir):
        shutil.rmtree(checkpoint)
    for marker in RUN_MARKERS:
        (run_dir / marker).unlink(missing_ok=True)
