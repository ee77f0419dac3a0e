"""toolkit.files: a write is whole or absent, never collides with another, and gets normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from toolkit.files import (atomic_directory, atomic_path, atomic_write_bytes, atomic_write_text,
                           atomic_writer, default_file_mode)


class Crash(Exception):
    pass


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one after."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_crash_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old content\n")
    with pytest.raises(Crash):
        with atomic_writer(target) as handle:
            handle.write("new content, half of it")
            handle.flush()
            raise Crash
    assert target.read_text() == "old content\n"
    assert names(tmp_path) == ["results.json"]


def test_crash_mid_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(Crash):
        with atomic_writer(tmp_path / "new.bin", "wb") as handle:
            handle.write(b"\0" * 1000)
            raise Crash
    assert names(tmp_path) == []


def test_two_interleaved_writers_to_one_path_do_not_collide(tmp_path):
    # With one fixed temporary name the second writer truncates the first one's file and one of
    # the two renames finds nothing to rename.
    target = tmp_path / "vocabulary.json"
    with atomic_writer(target) as first:
        first.write("first " * 1000)
        with atomic_writer(target) as second:
            second.write("second")
        assert target.read_text() == "second"
        first.write("end")
    assert target.read_text() == "first " * 1000 + "end"
    assert names(tmp_path) == ["vocabulary.json"]


def test_streaming_writes_and_text_is_utf8(tmp_path):
    target = tmp_path / "shard.bin"
    with atomic_writer(target, "wb") as handle:
        for index in range(100):
            handle.write(bytes([index]) * 1000)
    assert target.read_bytes() == b"".join(bytes([index]) * 1000 for index in range(100))
    atomic_write_text(tmp_path / "caption.txt", "café ☕")
    assert (tmp_path / "caption.txt").read_bytes() == "café ☕".encode("utf-8")
    atomic_write_bytes(tmp_path / "raw", b"\x00\xff")
    assert (tmp_path / "raw").read_bytes() == b"\x00\xff"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_files_get_the_permissions_of_open_not_of_mkstemp(tmp_path, umask, mask):
    umask(mask)
    assert default_file_mode() == 0o666 & ~mask
    atomic_write_bytes(tmp_path / "model.safetensors", b"weights")
    with atomic_path(tmp_path / "tok.model") as temporary:
        temporary.write_bytes(b"pieces")
    with atomic_directory(tmp_path / "export") as staging:
        (staging / "config.json").write_text("{}")
    for file in (tmp_path / "model.safetensors", tmp_path / "tok.model", tmp_path / "export" / "config.json"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~mask, file
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o777 & ~mask


def test_atomic_path_crash_or_no_output_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "tok.model"
    target.write_bytes(b"old")
    with pytest.raises(Crash):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise Crash
    with pytest.raises(FileNotFoundError):  # the block wrote nothing: an error, not an empty file
        with atomic_path(target):
            pass
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["tok.model"]


def test_atomic_path_keeps_the_suffix_for_tools_that_choose_a_format_by_it(tmp_path):
    with atomic_path(tmp_path / "table.npy") as temporary:
        assert temporary.suffix == ".npy" and temporary.parent == tmp_path
        assert not temporary.exists()
        temporary.write_bytes(b"x")
    assert names(tmp_path) == ["table.npy"]


def test_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(Crash):
        with atomic_directory(target) as staging:
            (staging / "model.safetensors").write_bytes(b"weights")
            raise Crash
    assert names(tmp_path) == []
    with atomic_directory(target) as staging:
        (staging / "model.safetensors").write_bytes(b"weights")
        (staging / "sub").mkdir()
        (staging / "sub" / "config.json").write_text("{}")
    assert names(tmp_path) == ["export"]
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert (target / "sub" / "config.json").read_text() == "{}"


def test_directory_never_replaces_a_non_empty_one_and_cleans_up(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OSError):
        with atomic_directory(target) as staging:
            (staging / "model.safetensors").write_bytes(b"weights")
    assert names(tmp_path) == ["export"] and names(target) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "mine"


def test_two_interleaved_directory_writers_do_not_collide(tmp_path):
    # Two runs staging the same directory at once: each stages under its own name; the first to
    # finish wins, the other's rename onto a non-empty directory fails and leaves no temporary.
    target = tmp_path / "wordnet"
    with pytest.raises(OSError):
        with atomic_directory(target) as first:
            (first / "data").write_text("first")
            with atomic_directory(target) as second:
                assert second != first
                (second / "data").write_text("second")
    assert names(tmp_path) == ["wordnet"]
    assert (target / "data").read_text() == "second"


def test_files_a_library_wrote_0600_in_a_staged_directory_get_normal_permissions(tmp_path, umask):
    umask(0o022)
    with atomic_directory(tmp_path / "export") as staging:
        (staging / "model.safetensors").write_bytes(b"weights")
        os.chmod(staging / "model.safetensors", 0o600)  # what safetensors' own temporary leaves
        (staging / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(staging / "run.sh", 0o700)
    assert stat.S_IMODE((tmp_path / "export" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export" / "run.sh").stat().st_mode) == 0o755


def test_checkpoint_files_get_normal_permissions(tmp_path, umask):
    import torch

    from toolkit.engine.checkpoint import write_checkpoint

    umask(0o022)
    final = write_checkpoint(tmp_path, 1, {"model.safetensors": {"w": torch.zeros(2)}, "trainer_state.json": {}},
                             "model: {}\n", keep_last=0)
    for path in [final, *final.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
