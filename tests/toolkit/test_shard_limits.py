"""Shard members are size-capped: a compressed bomb or a lying header is a clear error, not an OOM.

The shards here are a few kilobytes on disk and expand to at most a few megabytes: the cap under
test is small, so nothing large is ever allocated.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers import assert_one_line_error
from toolkit.cli.common import run_cli
from toolkit.data.shards import DEFAULT_MAX_MEMBER_BYTES, HEADER_ALLOWANCE, read_documents, read_samples
from toolkit.errors import DataError

CAP = 64 << 10  # 64 KiB


def gzip_tar(path: Path, members: list[tuple[str, bytes]], pax_headers: dict[str, str] | None = None) -> Path:
    """A gzip-compressed tar of the given members (zeros compress about 1000:1)."""
    buffer = io.BytesIO()
    tar_format = tarfile.PAX_FORMAT if pax_headers else tarfile.USTAR_FORMAT
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if pax_headers:
                info.pax_headers = dict(pax_headers)
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def test_the_default_cap_is_64_mib():
    assert DEFAULT_MAX_MEMBER_BYTES == 64 << 20


def test_a_gzip_bomb_member_is_refused_from_its_header(tmp_path):
    shard = gzip_tar(tmp_path / "bomb.tar.gz", [("a.txt", b"fine"), ("b.txt", bytes(4 * CAP))])
    assert shard.stat().st_size < 4096  # ~256 KiB of zeros in a few hundred bytes
    with pytest.raises(DataError) as caught:
        list(read_samples(shard, max_member_bytes=CAP))
    message = str(caught.value)
    assert str(shard) in message and "'b.txt'" in message and str(4 * CAP) in message and f"{CAP}-byte" in message


def test_a_member_exactly_at_the_cap_is_read(tmp_path):
    shard = gzip_tar(tmp_path / "edge.tar.gz", [("a.txt", b"x" * CAP)])
    assert [sample["txt"] for sample in read_samples(shard, max_member_bytes=CAP)] == [b"x" * CAP]
    with pytest.raises(DataError, match="'a.txt' is 65536 bytes"):
        list(read_samples(shard, max_member_bytes=CAP - 1))


def test_an_extended_header_that_expands_past_the_cap_is_stopped_while_decompressing(tmp_path):
    # tarfile reads a pax header whole before the member it describes: only the bounded stream sees it.
    huge_comment = "z" * (CAP + HEADER_ALLOWANCE + 4096)
    shard = gzip_tar(tmp_path / "pax.tar.gz", [("a.txt", b"small")], pax_headers={"comment": huge_comment})
    with pytest.raises(DataError) as caught:
        list(read_samples(shard, max_member_bytes=CAP))
    assert str(shard) in str(caught.value) and "member size cap" in str(caught.value)
    # The same archive with a cap that fits the header reads normally.
    assert [sample["txt"] for sample in read_samples(shard, max_member_bytes=2 * len(huge_comment))] == [b"small"]


def test_uncompressed_shards_are_capped_too(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("doc.txt")
        info.size = 2 * CAP
        archive.addfile(info, io.BytesIO(bytes(2 * CAP)))
    shard = tmp_path / "plain.tar"
    shard.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="'doc.txt' is 131072 bytes"):
        list(read_documents([shard], max_member_bytes=CAP))


def test_an_oversized_member_through_the_cli_is_exit_2_and_one_line(tmp_path, capsys):
    shard = gzip_tar(tmp_path / "bomb.tar.gz", [("b.txt", bytes(4 * CAP))])

    def main(arguments: list[str]) -> int:
        for _ in read_documents([Path(arguments[0])], max_member_bytes=CAP):
            pass
        return 0

    code = run_cli(main, [str(shard)])
    captured = capsys.readouterr()
    result = subprocess.CompletedProcess([], code, captured.out, captured.err)
    assert_one_line_error(result, str(shard), "'b.txt'", f"{CAP}-byte")
