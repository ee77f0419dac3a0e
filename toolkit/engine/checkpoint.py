"""Writing a training checkpoint: one directory per save, under a temporary name, renamed into place.

The format and everything that reads it is the public `toolkit.checkpoint`; this module is the
engine's writer.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.checkpoint import checkpoint_name, list_checkpoints, save_weights


@dataclass
class CheckpointContent:
    """Everything a checkpoint holds; built by the trainer on rank 0."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    trainer_state: dict[str, Any]  # JSON-able: step, data positions, RNG states
    recipe_yaml: str
    ema: dict[str, torch.Tensor] | None = None


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(run_dir: Path, content: CheckpointContent, keep_last: int) -> Path:
    """Write `run_dir/step-NNNNNN/` atomically, then delete checkpoints beyond the last `keep_last`."""
    final = run_dir / checkpoint_name(content.step)
    for stale in run_dir.glob(".tmp-step-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    temporary = run_dir / f".tmp-{final.name}-{os.getpid()}"
    temporary.mkdir(parents=True)
    save_weights(content.model, temporary / "model.safetensors")
    if content.ema is not None:
        save_weights(content.ema, temporary / "ema.safetensors")
    torch.save(content.optimizer, temporary / "optimizer.pt")
    (temporary / "scheduler.json").write_text(json.dumps(content.scheduler))
    (temporary / "trainer_state.json").write_text(json.dumps(content.trainer_state))
    (temporary / "recipe.yaml").write_text(content.recipe_yaml)
    for file in temporary.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_directory(temporary)
    if final.exists():  # re-saving a step after a resume: replace it
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync_directory(run_dir)
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


