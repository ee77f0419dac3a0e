"""The row-column-bundled FFN file (plugins/sparse/bundle.py): exact round trips, clear refusals."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bundle_fixtures import expected_record, shapes, tiny_model
from helpers import assert_error_output, assert_unchanged, snapshot
from plugins.sparse.bundle import MAGIC, PREFIX, BundleError, BundleReader, write_bundle
from toolkit.cli.common import run_cli


@pytest.mark.parametrize("layout", ["bundled", "split"])
@pytest.mark.parametrize("method", ["pread", "mmap"])
def test_round_trip_is_exact(tmp_path, layout, method):
    model = tiny_model()
    write_bundle(model, tmp_path / "ffn.bin", layout=layout)
    with BundleReader(tmp_path / "ffn.bin", shapes(model), method=method) as reader:
        reader.verify_data()
        for layer, (_, ffn_dim) in enumerate(shapes(model)):
            records = reader.read_neurons(layer, list(range(ffn_dim)))  # [F, 3, D]
            assert records.dtype == torch.float32
            assert torch.equal(records, torch.stack([expected_record(model, layer, i) for i in range(ffn_dim)]))


def test_a_neurons_record_is_contiguous_and_one_read_brings_it(tmp_path):
    model = tiny_model()
    write_bundle(model, tmp_path / "ffn.bin")
    with BundleReader(tmp_path / "ffn.bin") as reader:
        assert reader.record_bytes(1) == 3 * 16 * 4
        assert reader.part_offset(1, 5, 0) + reader.record_bytes(1) == reader.part_offset(1, 6, 0)
        out = torch.empty(2, 3, 16)  # neurons 7 and 8 in one read
        raw = out.view(torch.uint8).numpy()
        reader.read_records_into(1, 7, [memoryview(raw[0]).cast("B"), memoryview(raw[1]).cast("B")])
    assert torch.equal(out[0], expected_record(model, 1, 7)) and torch.equal(out[1], expected_record(model, 1, 8))


def test_state_dict_with_a_prefix_and_bfloat16(tmp_path):
    model = tiny_model()
    state = {f"transformer.{key}": value for key, value in model.state_dict().items()}
    header = write_bundle(state, tmp_path / "ffn.bin", dtype=torch.bfloat16)
    assert header["dtype"] == "bfloat16" and [layer["ffn_dim"] for layer in header["layers"]] == [24, 40]
    assert all(layer["offset"] % 4096 == 0 for layer in header["layers"])
    with BundleReader(tmp_path / "ffn.bin") as reader:
        records = reader.read_neurons(0, [3])
    assert records.dtype == torch.bfloat16 and torch.equal(records[0], expected_record(model, 0, 3).to(torch.bfloat16))


def error_line(capsys, path, *fragments, shapes_expected=None) -> None:
    """Opening `path` through the CLI runner is exit 2 and one `error:` line with the fragments."""
    code = run_cli(lambda argv: BundleReader(path, shapes_expected).close() or 0, [])
    assert_error_output(code, capsys.readouterr().err, str(path), *fragments)


def test_truncated_file_is_one_line(tmp_path, capsys):
    write_bundle(tiny_model(), tmp_path / "ffn.bin")
    data = (tmp_path / "ffn.bin").read_bytes()
    (tmp_path / "ffn.bin").write_bytes(data[:-100])
    error_line(capsys, tmp_path / "ffn.bin", "truncated", str(len(data) - 100), str(len(data)))
    (tmp_path / "ffn.bin").write_bytes(data[:40])
    error_line(capsys, tmp_path / "ffn.bin", "truncated or corrupt header")
    (tmp_path / "ffn.bin").write_bytes(data[:10])
    error_line(capsys, tmp_path / "ffn.bin", "truncated (only 10 bytes)")
    (tmp_path / "ffn.bin").write_bytes(b"")
    error_line(capsys, tmp_path / "ffn.bin", "not an FFN bundle")


def test_a_file_truncated_after_opening_fails_on_read(tmp_path):
    write_bundle(tiny_model(), tmp_path / "ffn.bin")
    with BundleReader(tmp_path / "ffn.bin") as reader:
        os.truncate(tmp_path / "ffn.bin", reader.part_offset(1, 39, 1))
        with pytest.raises(BundleError, match="truncated: read"):
            reader.read_neurons(1, [39])


def rewrite_header(path, change) -> None:
    """Edit the JSON header in place (same length padded with spaces), keeping its checksum valid or not."""
    data = bytearray(path.read_bytes())
    _, length = PREFIX.unpack(data[:PREFIX.size])
    header = json.loads(data[PREFIX.size:PREFIX.size + length])
    change(header)
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode().ljust(length)
    assert len(encoded) == length
    data[PREFIX.size:PREFIX.size + length] = encoded
    path.write_bytes(bytes(data))


def resign(header: dict) -> None:
    import hashlib
    header.pop("header_sha256")
    header["header_sha256"] = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_wrong_magic_version_checksum_and_shape_are_one_line(tmp_path, capsys):
    model = tiny_model()
    path = tmp_path / "ffn.bin"
    write_bundle(model, path)
    original = path.read_bytes()
    assert original.startswith(MAGIC)
    path.write_bytes(b"PK\x03\x04" + original[4:])
    error_line(capsys, path, "not an FFN bundle", "magic")
    path.write_bytes(original)
    rewrite_header(path, lambda header: (header.update(version=2), resign(header)))
    error_line(capsys, path, "format version 2")
    path.write_bytes(original)
    rewrite_header(path, lambda header: header.update(version=1, dtype="float64"))  # checksum now stale
    error_line(capsys, path, "header checksum mismatch")
    path.write_bytes(original)
    rewrite_header(path, lambda header: (header["layers"][1].update(ffn_dim=41), resign(header)))
    error_line(capsys, path, "layer 1 has an impossible shape or offset")
    path.write_bytes(original)
    error_line(capsys, path, "layer 1 is model_dim 16 x ffn_dim 40", "32 x 40", shapes_expected=[(16, 24), (32, 40)])
    error_line(capsys, path, "holds 2 FFN layers, the model has 3", shapes_expected=[(16, 24)] * 3)


def test_corrupt_data_is_found_by_verify(tmp_path):
    path = tmp_path / "ffn.bin"
    write_bundle(tiny_model(), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with BundleReader(path) as reader, pytest.raises(BundleError, match="layer 1 data checksum mismatch"):
        reader.verify_data()


def test_bad_weights_write_nothing(tmp_path, capsys):
    model = tiny_model()
    state = model.state_dict()
    state["layers.1.ffn.proj_2.weight"] = torch.zeros(16, 41)
    before = snapshot(tmp_path)
    code = run_cli(lambda argv: write_bundle(state, tmp_path / "ffn.bin") and 0, [])
    assert_error_output(code, capsys.readouterr().err, "layer 1", "not a SwiGLU pair")
    code = run_cli(lambda argv: write_bundle({"x": torch.zeros(2)}, tmp_path / "ffn.bin") and 0, [])
    assert_error_output(code, capsys.readouterr().err, "no FFN weights")
    assert_unchanged(before, tmp_path)

