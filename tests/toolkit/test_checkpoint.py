"""Checkpoints: atomic saves, keep-last, safe loading (no pickled code), clear errors."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from toolkit import checkpoint as ckpt
from toolkit.engine import checkpoint as engine_checkpoint
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint
from toolkit.errors import CheckpointError
from toolkit.registry import Registry


def content(step: int, model: nn.Module) -> CheckpointContent:
    return CheckpointContent(
        step=step, model=model.state_dict(), optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        scheduler={"last_epoch": step}, trainer_state={"step": step}, recipe_yaml="model: {name: x}\n",
    )


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_stored_once_and_restored(tmp_path):
    model = Tied()
    ckpt.save_weights(model.state_dict(), tmp_path / "w.safetensors")
    state = ckpt.load_weights(tmp_path / "w.safetensors")
    assert torch.equal(state["head.weight"], model.embed.weight.detach())
    fresh = Tied()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.head.weight, model.head.weight)


def test_keep_last_and_latest(tmp_path):
    model = nn.Linear(2, 2)
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, content(step, model), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000030", "step-000040"]
    assert ckpt.resolve_checkpoint(tmp_path).name == "step-000040"


def test_crash_during_save_leaves_previous_checkpoint_latest(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, content(10, model), keep_last=3)

    def crash(*args, **kwargs):
        raise OSError("disk pulled out mid-save")

    monkeypatch.setattr(engine_checkpoint.os, "rename", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, content(20, model), keep_last=3)
    monkeypatch.undo()
    assert ckpt.resolve_checkpoint(tmp_path).name == "step-000010"
    # the next save clears the half-written temporary directory
    save_checkpoint(tmp_path, content(30, model), keep_last=3)
    assert not list(tmp_path.glob(".tmp-*"))


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "optimizer.pt", "wb") as handle:
        pickle.dump({"state": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="refused"):
        ckpt.load_pickle_free(tmp_path / "optimizer.pt")
    assert not (tmp_path / "EXPLOITED").exists()


def test_pickle_in_place_of_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "model.safetensors", "wb") as handle:
        pickle.dump(Exploit(), handle)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ckpt.load_weights(tmp_path / "model.safetensors")
    assert not (tmp_path / "EXPLOITED").exists()


def test_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "empty")
    partial = tmp_path / "step-000005"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="missing trainer_state.json"):
        ckpt.resolve_checkpoint(partial)
    with pytest.raises(CheckpointError, match="no such"):
        ckpt.resolve_checkpoint(tmp_path / "absent")


def test_shape_mismatch_is_one_line(tmp_path):
    ckpt.save_weights(nn.Linear(3, 2).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"'weight' has shape \(2, 3\)"):
        ckpt.load_state_strict(nn.Linear(4, 2), ckpt.load_weights(tmp_path / "w.safetensors"), tmp_path)


def test_resave_of_a_step_keeps_it_if_the_swap_is_interrupted(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, content(10, model), keep_last=3)
    real_rename = engine_checkpoint.os.rename
    calls = []

    def crash_on_second(source, target):  # the old step moved aside, then the power goes
        calls.append(target)
        if len(calls) == 2:
            raise OSError("power cut between the two renames")
        real_rename(source, target)

    monkeypatch.setattr(engine_checkpoint.os, "rename", crash_on_second)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, content(10, nn.Linear(2, 2)), keep_last=3)
    monkeypatch.undo()
    assert not (tmp_path / "step-000010").exists()  # moved aside, not lost:
    save_checkpoint(tmp_path, content(20, model), keep_last=3)  # the next save puts it back
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000010", "step-000020"]
    restored = ckpt.load_weights(tmp_path / "step-000010" / "model.safetensors")
    assert torch.equal(restored["weight"], model.weight.detach())


def test_a_stale_later_step_is_pruned_not_the_new_one(tmp_path):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, content(50, model), keep_last=2)  # from a timeline resumed earlier
    save_checkpoint(tmp_path, content(10, model), keep_last=2)
    save_checkpoint(tmp_path, content(20, model), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000010", "step-000020"]


def test_a_transposed_view_is_not_stored_as_an_alias(tmp_path):
    square = torch.arange(4.0).reshape(2, 2)
    ckpt.save_weights({"a": square, "a_t": square.t()}, tmp_path / "v.safetensors")
    loaded = ckpt.load_weights(tmp_path / "v.safetensors")
    assert torch.equal(loaded["a_t"], square.t()) and not torch.equal(loaded["a_t"], loaded["a"])


@dataclass
class SmallConfig:
    width: int = 4


def _small_registries() -> dict[str, Registry]:
    registry = Registry("models")
    registry.add("small", lambda config: nn.Linear(config.width, 2), SmallConfig, plugin="tests")
    return {"models": registry}


def test_model_config_describes_a_runs_model_without_reading_its_weights(tmp_path):
    written = content(5, nn.Linear(3, 2))
    written.recipe_yaml = "model: {name: small, width: 3}\n"
    checkpoint = save_checkpoint(tmp_path, written, keep_last=1)
    described = ckpt.model_config(tmp_path, registries=_small_registries())
    assert (described.name, described.component.name, described.config) == ("model", "small", SmallConfig(width=3))
    assert described.checkpoint_dir == checkpoint
    loaded = ckpt.load_model(tmp_path, registries=_small_registries())  # the same config, built and filled
    assert loaded.model.in_features == 3
    (checkpoint / "model.safetensors").write_bytes(b"not weights")
    assert ckpt.model_config(checkpoint, registries=_small_registries()).config == SmallConfig(width=3)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ckpt.load_model(checkpoint, registries=_small_registries())


def test_model_config_names_the_recipe_of_a_bad_model_section(tmp_path):
    written = content(5, nn.Linear(3, 2))
    written.recipe_yaml = "model: {name: small, widht: 3}\n"
    save_checkpoint(tmp_path, written, keep_last=1)
    with pytest.raises(CheckpointError, match=r"recipe.yaml: .*widht"):
        ckpt.model_config(tmp_path, registries=_small_registries())
