"""Sharded checkpoints (`trainer.checkpoint_format: sharded`): DCP storage with JSON metadata, the
refusals that keep loading free of unpickling, and FSDP2 runs on 2 gloo ranks resumed on 2 and 1.

The multi-rank part shares one `torchrun` launch of this very file: the tiny OpenELM of
test_multirank_engine under FSDP2 with sharded checkpoints, 6 steps saving at 3 (the
uninterrupted run), then the same run resumed from its step 3. In this process afterwards, 1 rank
resumes from that step 3 (a full checkpoint at its end). The same world size must be
bit-identical (losses, weights, optimizer state, EMA); 1 rank agrees to float rounding (rtol
1e-5: a gradient averaged over ranks is summed in another order), which a missing optimizer
state or a wrong shard moves far beyond.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import torch

from test_multirank_engine import OPENELM, launch_two_ranks, losses, run_scenarios

SHARDED = [*OPENELM, "dist.strategy=fsdp", "trainer.checkpoint_format=sharded"]
TWO_RANKS = {
    "sharded": ("openelm/tiny.yaml", [*SHARDED, "data.batch_size=4"], None),
    "sharded-resumed": ("openelm/tiny.yaml", [*SHARDED, "data.batch_size=4"], "sharded/step-000003"),
}
ONE_RANK = {
    "sharded-to-one": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=8"], "sharded/step-000003"),
    # One process writing sharded checkpoints: DCP without a process group, every tensor whole.
    "sharded-to-one-sharded": ("openelm/tiny.yaml", [*OPENELM, "data.batch_size=8", "trainer.checkpoint_format=sharded"],
                               "sharded/step-000003"),
}


def count_full_tensor_calls() -> dict[str, int]:
    """Count DTensor.full_tensor (what gathering a whole FSDP2 tensor calls) from now on."""
    from torch.distributed.tensor import DTensor

    counter = {"count": 0}
    original = DTensor.full_tensor

    def counting(self, *args, **kwargs):
        counter["count"] += 1
        return original(self, *args, **kwargs)

    DTensor.full_tensor = counting
    return counter


if __name__ == "__main__":  # one rank of the torchrun launch
    results = Path(sys.argv[1])
    gathers = count_full_tensor_calls()
    run_scenarios(TWO_RANKS, results)
    (results / f"gathers.rank{os.environ['RANK']}.json").write_text(json.dumps(gathers))
    sys.exit(0)


import pytest  # noqa: E402 - the torchrun ranks above need neither pytest nor the test helpers
from safetensors.torch import load_file  # noqa: E402

from toolkit.engine.dcp_storage import JsonMetadataReader, JsonMetadataWriter, read_metadata_file  # noqa: E402
from toolkit.engine.sharded import read_full_tensors, save_tensors  # noqa: E402
from toolkit.errors import CheckpointError  # noqa: E402

# -- in-process: the storage pair ------------------------------------------------------------------


def small_state() -> dict[str, torch.Tensor]:
    return {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
            "half": torch.linspace(-1, 1, 5, dtype=torch.bfloat16),
            "step": torch.tensor(7, dtype=torch.int64)}


def test_json_metadata_round_trips_and_the_tensors_come_back_exactly(tmp_path):
    state = small_state()
    save_tensors(state, tmp_path)
    text = (tmp_path / ".metadata").read_text()
    data = json.loads(text)  # JSON, not pickle
    assert data["tensors"]["weight"] == {"dtype": "float32", "size": [3, 4], "requires_grad": False,
                                         "chunks": [{"offsets": [0, 0], "sizes": [3, 4]}]}
    assert data["tensors"]["half"]["dtype"] == "bfloat16" and data["tensors"]["step"]["size"] == []
    assert {entry["fqn"] for entry in data["storage"]} == set(state)
    assert {entry["path"] for entry in data["storage"]} == {"__0_0.distcp"}
    metadata = read_metadata_file(tmp_path / ".metadata")
    assert metadata.state_dict_metadata["weight"].size == torch.Size([3, 4])
    assert metadata.planner_data == {key: (key,) for key in state}
    loaded = read_full_tensors(tmp_path)
    assert loaded.keys() == state.keys()
    assert all(loaded[key].dtype == state[key].dtype and torch.equal(loaded[key], state[key]) for key in state)


def test_the_writer_refuses_a_non_tensor_item(tmp_path):
    import torch.distributed.checkpoint as dcp

    with pytest.raises(BaseException) as raised:  # DCP wraps it in its CheckpointException
        dcp.save({"weight": torch.ones(2), "note": "text"}, storage_writer=JsonMetadataWriter(tmp_path))
    assert "'note' is not a tensor" in str(raised.value)
    assert not (tmp_path / ".metadata").exists()


def tamper(directory: Path, how: str) -> None:
    path = directory / ".metadata"
    if how == "pickled":
        path.write_bytes(pickle.dumps(read_metadata_file(path)))
    elif how == "byte-io":
        data = json.loads(path.read_text())
        data["tensors"]["note"] = {"bytes": True}
        path.write_text(json.dumps(data))
    elif how == "malformed":
        path.write_text(path.read_text()[:-20])
    else:  # a tensor entry whose dtype is not a torch dtype
        data = json.loads(path.read_text())
        data["tensors"]["weight"]["dtype"] = "os.system"
        path.write_text(json.dumps(data))


@pytest.mark.parametrize("how, fragment", [("pickled", "refused to load: pickled DCP metadata"),
                                           ("byte-io", "refused to load: holds non-tensor (BYTE_IO) items, e.g. 'note'"),
                                           ("malformed", "not valid JSON metadata"),
                                           ("bad-dtype", "malformed DCP metadata (ValueError: unknown dtype 'os.system')")])
def test_the_reader_refuses_unsafe_or_broken_metadata_with_one_line_naming_the_file(tmp_path, monkeypatch, how,
                                                                                    fragment):
    save_tensors(small_state(), tmp_path)
    tamper(tmp_path, how)
    unpickled = []
    for name in ("load", "loads"):  # DCP's own reader calls pickle.load
        original = getattr(pickle, name)
        monkeypatch.setattr(pickle, name, lambda *args, original=original, **kwargs: unpickled.append(1)
                            or original(*args, **kwargs))
    with pytest.raises(CheckpointError) as raised:
        read_full_tensors(tmp_path)
    with pytest.raises(CheckpointError):
        JsonMetadataReader(tmp_path).read_metadata()
    message = raised.value.message
    assert "\n" not in message and message.startswith(str(tmp_path / ".metadata")), message
    assert fragment in message, message
    assert unpickled == []


# -- FSDP2 on 2 gloo ranks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    launch_two_ranks(__file__, folder)
    run_scenarios(ONE_RANK, folder)
    return folder


def shards(run_dir: Path, step: str = "step-000006") -> dict[str, torch.Tensor]:
    return read_full_tensors(run_dir / step / "sharded")


@pytest.mark.slow
def test_a_sharded_checkpoint_holds_each_ranks_shards_and_no_rank_gathered(results):
    checkpoint = results / "sharded" / "step-000003"
    assert sorted(path.name for path in checkpoint.iterdir()) == [
        "recipe.yaml", "scheduler.json", "sharded", "sharded.json", "trainer_state.json"]
    files = {path.name: path.stat().st_size for path in (checkpoint / "sharded").iterdir()}
    assert set(files) == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    # Each rank wrote about half of the tensors, not the whole model.
    assert max(files["__0_0.distcp"], files["__1_0.distcp"]) < 0.6 * (files["__0_0.distcp"] + files["__1_0.distcp"])
    chunks = json.loads((checkpoint / "sharded" / ".metadata").read_text())["tensors"]
    assert len(chunks["model/token_embeddings.weight"]["chunks"]) == 2  # one per rank
    assert [json.loads((results / f"gathers.rank{rank}.json").read_text())["count"] for rank in (0, 1)] == [0, 0]
    rest = json.loads((checkpoint / "sharded.json").read_text())["optimizer"]
    assert rest["param_groups"][0]["params"] and "exp_avg" in next(iter(rest["state"].values()))


@pytest.mark.slow
def test_a_sharded_fsdp2_run_resumes_bit_identically_on_two_ranks(results):
    straight, resumed = losses(results / "sharded"), losses(results / "sharded-resumed")
    assert sorted(straight) == list(range(1, 7))
    assert resumed == {step: straight[step] for step in (4, 5, 6)}
    expected, actual = shards(results / "sharded"), shards(results / "sharded-resumed")
    assert actual.keys() == expected.keys()
    assert any(key.startswith("optimizer/") for key in expected) and any(key.startswith("ema/") for key in expected)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)


@pytest.mark.slow
def test_a_sharded_fsdp2_checkpoint_resumes_on_one_rank(results):
    expected = losses(results / "sharded")
    assert losses(results / "sharded-to-one") == pytest.approx({step: expected[step] for step in (4, 5, 6)},
                                                               rel=1e-5, abs=1e-6)
    whole = shards(results / "sharded")
    for file, prefix in (("model.safetensors", "model/"), ("ema.safetensors", "ema/")):
        saved = load_file(results / "sharded-to-one" / "step-000006" / file)
        assert saved.keys() == {key.removeprefix(prefix) for key in whole if key.startswith(prefix)}
        for key, value in saved.items():
            torch.testing.assert_close(value, whole[prefix + key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_one_process_writes_the_same_state_in_the_sharded_format(results):
    assert losses(results / "sharded-to-one-sharded") == losses(results / "sharded-to-one")
    checkpoint = results / "sharded-to-one-sharded" / "step-000006"
    assert sorted(path.name for path in (checkpoint / "sharded").iterdir()) == [".metadata", "__0_0.distcp"]
    one, two = shards(results / "sharded-to-one-sharded"), shards(results / "sharded")
    assert one.keys() == two.keys()
    full = load_file(results / "sharded-to-one" / "step-000006" / "model.safetensors")
    assert all(torch.equal(one["model/" + key], value) for key, value in full.items())
    for key in two:
        torch.testing.assert_close(one[key], two[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_a_tampered_sharded_checkpoint_is_refused_at_resume_before_the_run_directory_is_touched(results, tmp_path):
    import shutil

    from toolkit.assembly import build_trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    checkpoint = tmp_path / "step-000003"
    shutil.copytree(results / "sharded" / "step-000003", checkpoint)
    tamper(checkpoint / "sharded", "pickled")
    out = tmp_path / "resumed"
    recipe = load_recipe("openelm/tiny.yaml", [*OPENELM, "data.batch_size=8", f"trainer.out_dir={out}"],
                         get_registries())
    with pytest.raises(CheckpointError) as raised:
        build_trainer(recipe, resume=str(checkpoint))
    assert "\n" not in raised.value.message
    assert f"{checkpoint / 'sharded' / '.metadata'}: refused to load: pickled DCP metadata" in raised.value.message
    assert not out.exists()


@pytest.mark.slow
def test_load_model_reads_a_sharded_checkpoints_weights_whole(results):
    from toolkit.checkpoint import load_model

    loaded = load_model(results / "sharded")  # the run directory: its latest checkpoint, step 6
    assert loaded.checkpoint_dir.name == "step-000006"
    whole = shards(results / "sharded")
    state = loaded.model.state_dict()
    assert state.keys() == {key.removeprefix("model/") for key in whole if key.startswith("model/")}
    assert all(torch.equal(value, whole["model/" + key]) for key, value in state.items())


@pytest.mark.slow
def test_soups_and_hf_exports_read_a_sharded_checkpoint_like_a_full_one(results, tmp_path):
    from plugins.openelm.hf_export import export_hf
    from plugins.rlhf.soup import make_soup
    from toolkit.checkpoint import resolve_checkpoint

    sharded, full = results / "sharded-to-one-sharded", results / "sharded-to-one"
    expected = load_file(full / "step-000006" / "model.safetensors")  # the same state, saved whole
    soup = make_soup([str(sharded), str(sharded)], [0.5, 0.5], tmp_path / "soup")
    souped = load_file(resolve_checkpoint(soup) / "model.safetensors")
    assert souped.keys() == expected.keys()
    assert all(torch.equal(souped[key], value) for key, value in expected.items())
    export_hf(sharded, tmp_path / "hf-sharded")
    export_hf(full, tmp_path / "hf-full")
    from_sharded = load_file(tmp_path / "hf-sharded" / "model.safetensors")
    from_full = load_file(tmp_path / "hf-full" / "model.safetensors")
    assert from_sharded.keys() == from_full.keys() and from_full
    assert all(torch.equal(from_sharded[key], value) for key, value in from_full.items())
