"""A crash while a checkpoint is being pruned must leave `--resume auto` a complete newest checkpoint.

Found by reading the pruning path while building tools/chaos_resume.py: `shutil.rmtree` deletes a
checkpoint file by file, so a kill part-way left a half-deleted `step-NNNNNN/` under its real
name; when it was a later step abandoned by a resume from an older one, `latest_checkpoint`
picked it and the resume was refused as incomplete.
"""

from __future__ import annotations

import pytest
from torch import nn

from toolkit import checkpoint as ckpt
from toolkit.engine import checkpoint as engine_checkpoint
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint


class SimulatedKill(BaseException):
    """What a SIGKILL looks like from inside: the process stops between two file operations."""


def content(step: int, model: nn.Module) -> CheckpointContent:
    return CheckpointContent(
        step=step, model=model.state_dict(), optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        scheduler={"last_epoch": step}, trainer_state={"step": step}, recipe_yaml="model: {name: x}\n",
    )


def kill_after_first_file(monkeypatch):
    """rmtree that deletes one file of the directory, then the process dies."""
    def killed_rmtree(path, ignore_errors=False):
        (path / "trainer_state.json").unlink()
        raise SimulatedKill

    monkeypatch.setattr(engine_checkpoint.shutil, "rmtree", killed_rmtree)


def test_kill_while_pruning_a_later_step_leaves_the_new_one_newest(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, content(10, model), keep_last=3)  # resumed from here later
    save_checkpoint(tmp_path, content(50, model), keep_last=3)  # the timeline that resume abandons
    kill_after_first_file(monkeypatch)
    with pytest.raises(SimulatedKill):
        save_checkpoint(tmp_path, content(20, model), keep_last=3)  # prunes step 50: killed part-way
    monkeypatch.undo()
    assert ckpt.resolve_checkpoint(ckpt.latest_checkpoint(tmp_path)).name == "step-000020"
    save_checkpoint(tmp_path, content(30, model), keep_last=3)  # the next save clears what was left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000010", "step-000020", "step-000030"]


def test_kill_while_pruning_an_old_step_leaves_only_complete_checkpoints(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    for step in (10, 20):
        save_checkpoint(tmp_path, content(step, model), keep_last=2)
    kill_after_first_file(monkeypatch)
    with pytest.raises(SimulatedKill):
        save_checkpoint(tmp_path, content(30, model), keep_last=2)  # prunes step 10: killed part-way
    monkeypatch.undo()
    for checkpoint in ckpt.list_checkpoints(tmp_path):  # every listed checkpoint is whole
        assert ckpt.resolve_checkpoint(checkpoint) == checkpoint
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000020", "step-000030"]
