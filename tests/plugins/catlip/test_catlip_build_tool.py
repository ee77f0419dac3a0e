"""tools/build_image_text_shards.py: a folder or a CSV becomes the train-*/val-* shards the README's
commands (`toolkit-catlip-vocab --shards 'data/train-*.tar'`, data.val_shards) name."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from helpers import REPO
from plugins.catlip.shards import load_index
from toolkit.cli.common import run_cli
from toolkit.data.shards import expand_shard_pattern

from .test_catlip_data import CAPTIONS, png

TOOL = REPO / "tools" / "build_image_text_shards.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("build_image_text_shards_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(8):
        (folder / f"p{index}.png").write_bytes(png((30 * index, 200, 90)))
        (folder / f"p{index}.txt").write_text(CAPTIONS[index])
    (folder / "uncaptioned.png").write_bytes(png((1, 2, 3)))
    return folder


def test_folder_and_csv_give_train_and_val_shards(photos, tmp_path, capsys):
    tool = load_tool()
    out = tmp_path / "data"
    assert tool.run(["--folder", str(photos), "--out", str(out), "--val-fraction", "0.25"]) == 0
    assert "skipping 1 image(s) without a caption file" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["train-000000.tar", "val-000000.tar"]
    train = load_index(expand_shard_pattern(str(out / "train-*.tar"))[0], tmp_path / "cache")
    val = load_index(expand_shard_pattern(str(out / "val-*.tar"))[0], tmp_path / "cache")
    assert (len(train.captions), len(val.captions)) == (6, 2)
    assert sorted(train.captions + val.captions) == sorted(CAPTIONS)
    # The same folder splits the same way; shards already there are refused without --overwrite.
    code = run_cli(tool.run, ["--folder", str(photos), "--out", str(out)])
    assert code == 2 and "already holds shards (train-000000.tar, ...)" in capsys.readouterr().err
    table = tmp_path / "pairs.csv"
    table.write_text("path,caption\n" + "".join(f"photos/p{i}.png,{CAPTIONS[i]}\n" for i in range(8)))
    assert tool.run(["--csv", str(table), "--out", str(tmp_path / "csv"), "--prefix", "all"]) == 0
    assert [path.name for path in (tmp_path / "csv").iterdir()] == ["all-000000.tar"]
