"""Shard building (split by document, deterministic, atomic) and reading (damage is a DataError)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from plugins.lm.shard_writer import Document, collect_documents, split_documents, write_text_shards
from toolkit.data.shards import expand_shard_pattern, read_documents, read_samples
from toolkit.errors import DataError

from helpers import assert_one_line_error, assert_unchanged, snapshot

REPO = Path(__file__).resolve().parents[3]
TOOL = REPO / "tools" / "build_text_shards.py"


def make_source_dir(root: Path, count: int = 12) -> Path:
    source = root / "src"
    (source / "nested").mkdir(parents=True)
    for index in range(count):
        folder = source / "nested" if index % 3 == 0 else source
        suffix = ".md" if index % 2 else ".txt"
        (folder / f"doc.{index:02d}{suffix}").write_text(f"Document {index}.\nLine two of {index}.\n" * (index + 1))
    (source / "ignored.bin").write_bytes(b"\x00\x01")
    (source / "empty.txt").write_text("  \n")
    return source


def load_tool():
    spec = importlib.util.spec_from_file_location("build_text_shards_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_is_by_document_deterministic_and_never_empty():
    documents = [Document(f"play-{index}.md", f"text {index}") for index in range(40)]
    train, val = split_documents(documents, 0.05, seed=0)
    assert len(val) == 2 and len(train) == 38
    assert {d.name for d in train}.isdisjoint({d.name for d in val})
    # Order-independent: shuffling the input gives the same split.
    train_again, val_again = split_documents(list(reversed(documents)), 0.05, seed=0)
    assert {d.name for d in val_again} == {d.name for d in val}
    assert {d.name for d in split_documents(documents, 0.05, seed=1)[1]} != {d.name for d in val}
    # Small corpora: two documents still give one for val; one document keeps it for training.
    assert [len(part) for part in split_documents(documents[:2], 0.01)] == [1, 1]
    assert [len(part) for part in split_documents(documents[:1], 0.5)] == [1, 0]
    assert len(split_documents(documents[:3], 0.9)[0]) == 1  # never all of them
    with pytest.raises(DataError):
        split_documents(documents, 1.0)


def test_write_and_read_back_byte_identical(tmp_path):
    source = make_source_dir(tmp_path)
    documents = collect_documents(source)
    assert len(documents) == 12 and all(not d.name.endswith(".bin") for d in documents)
    first = write_text_shards(documents, tmp_path / "a", val_fraction=0.25, shard_size_bytes=200)
    second = write_text_shards(documents, tmp_path / "b", val_fraction=0.25, shard_size_bytes=200)
    assert first.documents == {"train": 9, "val": 3}
    assert second.shards == first.shards
    assert len(first.shards["train"]) > 1  # the size limit rolls shards over
    for split in ("train", "val"):
        for name in first.shards[split]:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["val_documents"] == first.val_documents
    # Reading returns every document once, each whole, with its source in the json metadata.
    by_text = {d.text: d.name for d in documents}
    seen = []
    for split in ("train", "val"):
        paths = expand_shard_pattern(str(tmp_path / "a" / f"{split}-*.tar"))
        for path in paths:
            for sample in read_samples(path):
                text = sample["txt"].decode()
                assert json.loads(sample["json"])["source"] == by_text[text]
                seen.append((split, by_text[text]))
    assert sorted(name for _, name in seen) == sorted(by_text.values())
    assert {name for split, name in seen if split == "val"} == set(first.val_documents)
    assert not list((tmp_path / "a").glob(".*tmp*"))  # no temporary files left behind


def test_refuses_to_mix_with_existing_shards(tmp_path):
    documents = [Document(f"{i}.txt", "words " * 10) for i in range(4)]
    write_text_shards(documents, tmp_path, shard_size_bytes=10)
    with pytest.raises(DataError, match="already holds shards"):
        write_text_shards(documents[:2], tmp_path)
    summary = write_text_shards(documents[:2], tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == sorted(summary.shards["train"] + summary.shards["val"])


def test_brace_patterns_and_missing_shards(tmp_path):
    documents = [Document(f"{i}.txt", "words " * 50) for i in range(6)]
    write_text_shards(documents, tmp_path, val_fraction=0.0, shard_size_bytes=100)
    paths = expand_shard_pattern(str(tmp_path / "train-{000000..000002}.tar"))
    assert [p.name for p in paths] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert len(expand_shard_pattern(f"{tmp_path}/train-00000[0-1].tar::{tmp_path}/train-000005.tar")) == 3
    with pytest.raises(DataError, match=r"train-000006.tar \(and 3 more\)"):
        expand_shard_pattern(str(tmp_path / "train-{000000..000009}.tar"))
    with pytest.raises(DataError, match="no shard file matches"):
        expand_shard_pattern(str(tmp_path / "nothing-*.tar"))


@pytest.fixture
def one_shard(tmp_path) -> Path:
    documents = [Document(f"{i}.txt", f"document {i} " * 200) for i in range(5)]
    write_text_shards(documents, tmp_path / "shards", val_fraction=0.0)
    return tmp_path / "shards" / "train-000000.tar"


def test_truncated_shard_is_a_data_error_naming_the_file(one_shard, tmp_path):
    data = one_shard.read_bytes()
    offsets = [member.offset for member in tarfile.open(one_shard)]
    cases = {
        "half.tar": data[: len(data) // 2],  # inside a member's data
        "on_boundary.tar": data[: offsets[4]],  # exactly between members: tarfile alone says nothing
        "in_header.tar": data[: offsets[4] + 100],
    }
    for name, content in cases.items():
        damaged = tmp_path / name
        damaged.write_bytes(content)
        with pytest.raises(DataError, match="corrupt or truncated") as error:
            list(read_documents([damaged]))
        assert str(damaged) in error.value.one_line()


def test_corrupt_header_and_non_tar_are_data_errors(one_shard, tmp_path):
    data = bytearray(one_shard.read_bytes())
    offset = [member.offset for member in tarfile.open(one_shard)][3]
    data[offset:offset + 512] = b"x" * 512
    damaged = tmp_path / "corrupt.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt.tar"):
        list(read_documents([damaged]))
    not_tar = tmp_path / "not.tar"
    not_tar.write_text("hello " * 300)
    with pytest.raises(DataError, match="not.tar"):
        list(read_documents([not_tar]))


def test_build_tool_in_process_and_error_line(tmp_path, capsys):
    tool = load_tool()
    source = make_source_dir(tmp_path, count=5)
    assert tool.run([str(source), str(tmp_path / "out"), "--val-fraction", "0.2", "--seed", "3"]) == 0
    assert "train: 4 documents" in capsys.readouterr().out
    assert (tmp_path / "out" / "val-000000.tar").is_file()
    # A user error is one `error:` line and exit status 2, never a traceback.
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "missing"), str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert_one_line_error(result, str(tmp_path / "missing"))
    assert result.stderr.count("\n") == 1
    assert_unchanged(before, tmp_path)
