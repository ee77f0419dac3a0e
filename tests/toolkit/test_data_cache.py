"""The build-once cache: concurrent builders build an entry once; a failed build leaves nothing."""

from __future__ import annotations

import threading
import time

import pytest

from toolkit.data.cache import build_once, cache_root


def test_concurrent_builders_build_once(tmp_path):
    calls = []

    def build(temporary):
        calls.append(temporary)
        time.sleep(0.2)  # long enough for the other threads to arrive and wait on the lock
        temporary.write_text("built")

    target = tmp_path / "entry.bin"
    threads = [threading.Thread(target=build_once, args=(target, build)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and target.read_text() == "built"
    assert calls[0].suffix == ".bin" and not calls[0].exists()


def test_failed_build_leaves_no_entry(tmp_path):
    def build(temporary):
        (temporary).mkdir()
        (temporary / "half").write_text("x")
        raise RuntimeError("crash mid-build")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "corpus", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.lock"]


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "env"))
    assert cache_root("") == tmp_path / "env"
    assert cache_root(str(tmp_path / "configured")) == tmp_path / "configured"
    monkeypatch.delenv("TOOLKIT_CACHE")
    assert cache_root("").parts[-2:] == (".cache", "toolkit")
