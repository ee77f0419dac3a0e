"""Writing a training checkpoint: one directory per save, under a temporary name, renamed into place.

The format and everything that reads it is the public `toolkit.checkpoint`; this module is the
engine's writer. What goes in is a map of file name -> content, the file's suffix saying how it
is written: `.safetensors` (a flat map of tensors), `.pt` (tensors in plain containers, read back
with `weights_only=True`) or `.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.checkpoint import checkpoint_name, checkpoint_step, list_checkpoints, save_weights
from toolkit.files import fsync_directory, fsync_tree, give_default_permissions


def write_file(path: Path, content: Any) -> None:
    """Write one checkpoint file in the format its suffix names."""
    if path.suffix == ".safetensors":
        save_weights(content, path)
    elif path.suffix == ".pt":
        torch.save(content, path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(content))
    else:
        raise ValueError(f"{path.name}: no checkpoint format for suffix '{path.suffix}'")


def _recover_replacements(run_dir: Path) -> None:
    """Finish a re-save that a crash interrupted: a replaced checkpoint whose successor never
    arrived is put back; one whose successor is in place is deleted."""
    for replaced in run_dir.glob(".replaced-step-*"):
        name = replaced.name.removeprefix(".replaced-").rsplit("-", 1)[0]  # step-NNNNNN
        if (run_dir / name).exists():
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.rename(replaced, run_dir / name)


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Clear what a crashed save left and create the temporary directory a save of `step` fills
    (rank 0 alone; under a sharded save every rank then writes its shards into it)."""
    _recover_replacements(run_dir)
    for stale in [*run_dir.glob(".tmp-step-*"), *run_dir.glob(".pruned-step-*")]:  # left by a crash
        shutil.rmtree(stale, ignore_errors=True)
    temporary = run_dir / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    temporary.mkdir(parents=True)
    return temporary


def finish_checkpoint(run_dir: Path, step: int, temporary: Path, files: dict[str, Any], recipe_yaml: str,
                      keep_last: int) -> Path:
    """Add `files` and the recipe to `temporary`, rename it to `run_dir/step-NNNNNN/`, then prune.

    Pruning removes checkpoints of a later step than this one (left by the timeline a resume from
    an older step abandoned; the metrics log drops their lines too), then all but the last
    `keep_last`. A checkpoint of the same step is replaced: it is moved aside, the new one renamed
    in, and only then deleted, so that a crash in between never leaves the step missing.
    """
    final = run_dir / checkpoint_name(step)
    try:
        for name, content in files.items():
            write_file(temporary / name, content)
        (temporary / "recipe.yaml").write_text(recipe_yaml)
        give_default_permissions(temporary)  # safetensors writes its files 0600
        fsync_tree(temporary)
    except BaseException:  # a full disk: leave no half checkpoint behind (a kill leaves one for the next save)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    replaced = None
    if final.exists():  # re-saving a step after a resume
        replaced = run_dir / f".replaced-{final.name}-{os.getpid()}"
        os.rename(final, replaced)
    os.rename(temporary, final)
    fsync_directory(run_dir)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    for later in [p for p in list_checkpoints(run_dir) if checkpoint_step(p) > step]:
        _remove_checkpoint(later)
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            _remove_checkpoint(old)
    return final


def write_checkpoint(run_dir: Path, step: int, files: dict[str, Any], recipe_yaml: str, keep_last: int) -> Path:
    """Write `run_dir/step-NNNNNN/` atomically, then prune (see `finish_checkpoint`)."""
    return finish_checkpoint(run_dir, step, begin_checkpoint(run_dir, step), files, recipe_yaml, keep_last)


def _remove_checkpoint(checkpoint: Path) -> None:
    """Delete a pruned checkpoint: renamed away first (one atomic step), then removed file by file,
    so that a crash during the removal never leaves a half-deleted `step-NNNNNN/` that
    `--resume auto` would take for the newest checkpoint and refuse as incomplete."""
    doomed = checkpoint.with_name(f".pruned-{checkpoint.name}-{os.getpid()}")
    os.rename(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@dataclass
class CheckpointContent:
    """A single-model checkpoint's content, for tools and tests that write one without a trainer."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    trainer_state: dict[str, Any]  # JSON-able: step, data positions, RNG states
    recipe_yaml: str
    ema: dict[str, torch.Tensor] | None = None

    def files(self) -> dict[str, Any]:
        files = {"model.safetensors": self.model, "optimizer.pt": self.optimizer,
                 "scheduler.json": self.scheduler, "trainer_state.json": self.trainer_state}
        if self.ema is not None:
            files["ema.safetensors"] = self.ema
        return files


def save_checkpoint(run_dir: Path, content: CheckpointContent, keep_last: int) -> Path:
    """`write_checkpoint` for a `CheckpointContent`."""
    return write_checkpoint(run_dir, content.step, content.files(), content.recipe_yaml, keep_last)
