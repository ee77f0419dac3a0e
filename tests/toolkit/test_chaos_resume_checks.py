"""tools/chaos_resume.py's verdict on a run directory after a kill (the benchmark itself takes
minutes, so only its checks are tested here): a checkpoint seen complete is lost unless at least
`keep_last` newer ones remain, and an incomplete newest checkpoint counts as lost."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from torch import nn

from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint

TOOL = Path(__file__).resolve().parents[2] / "tools" / "chaos_resume.py"
_spec = importlib.util.spec_from_file_location("chaos_resume", TOOL)
chaos = importlib.util.module_from_spec(_spec)
sys.modules["chaos_resume"] = chaos  # its dataclasses look their module up
_spec.loader.exec_module(chaos)


def write(run_dir: Path, *steps: int) -> None:
    model = nn.Linear(2, 2)
    for step in steps:
        save_checkpoint(run_dir, CheckpointContent(
            step=step, model=model.state_dict(), optimizer={"state": {}, "param_groups": []},
            scheduler={}, trainer_state={"step": step}, recipe_yaml="model: {name: x}\n"), keep_last=0)


def test_a_checkpoint_pruned_by_keep_last_is_not_lost(tmp_path):
    write(tmp_path, 4, 6)
    assert chaos.lost_checkpoints(tmp_path, ever_seen={2, 4, 6}, keep_last=2) == []


def test_a_checkpoint_gone_with_too_few_newer_ones_is_lost(tmp_path):
    write(tmp_path, 2, 6)
    assert chaos.lost_checkpoints(tmp_path, ever_seen={2, 4, 6}, keep_last=2) == [4]
    assert chaos.lost_checkpoints(tmp_path, ever_seen={2, 4, 6}, keep_last=1) == []


def test_an_incomplete_newest_checkpoint_is_lost(tmp_path):
    write(tmp_path, 2, 4)
    (tmp_path / "step-000004" / "trainer_state.json").unlink()
    assert chaos.lost_checkpoints(tmp_path, ever_seen={2, 4}, keep_last=2) == [4]
    assert chaos.checkpoint_steps(tmp_path) == {2, 4}
