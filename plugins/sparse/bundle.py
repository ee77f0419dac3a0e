"""The FFN weight file served from disk: neuron i's gate row, up row and down column in one record.

"LLM in a flash" (Alizadeh et al., ACL 2024) row-column bundling: decoding with a sparse FFN needs,
for each active neuron i of a layer, row i of the gate projection, row i of the up projection and
column i of the down projection. Stored together, one positioned read brings all three.

OpenELM's FFN (plugins/openelm/model.py) is `proj_2(silu(gate) * up)` with `proj_1.weight`
[2F, D] holding the gate rows 0..F-1 then the up rows F..2F-1, and `proj_2.weight` [D, F]; neuron
i is therefore proj_1 rows i and F+i and proj_2 column i.

File layout (little-endian):
    8 bytes  magic b"TKFFNBDL"
    8 bytes  header length H (unsigned)
    H bytes  JSON header (UTF-8), then zero padding to a 4096-byte boundary
    per layer, at its header offset (4096-aligned): the layer's weights, raw, in the header's dtype
        layout "bundled": records [F, 3, D]: (gate row, up row, down column) per neuron
        layout "split":   [3, F, D]: the gate matrix, the up matrix, the down matrix transposed
                          (what a non-bundled file holds; the naive baseline reads it)
The header names the format, its version, dtype, layout, the file size, per layer model_dim,
ffn_dim, offset, byte count and sha256 of its bytes (checked by `verify_data`, which reads all of
it), and `header_sha256`, the sha256 of the header's canonical JSON without that field. Nothing is
unpickled; a damaged or mismatched file is one `BundleError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolkit.errors import CheckpointError
from toolkit.files import atomic_writer

MAGIC = b"TKFFNBDL"
FORMAT_NAME = "toolkit-ffn-bundle"
FORMAT_VERSION = 1
ALIGNMENT = 4096  # page size: layer data starts on a page, so a record never straddles more pages than it must
PREFIX = struct.Struct("<8sQ")  # magic, header length
MAX_HEADER_BYTES = 1 << 20
LAYOUTS = ("bundled", "split")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PARTS = 3  # gate, up, down
FFN_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.ffn\.proj_([12])\.weight$")


class BundleError(CheckpointError):
    """An FFN bundle file is missing, truncated, corrupt, of another format or for another model."""


@dataclass(frozen=True)
class BundleLayer:
    model_dim: int  # D
    ffn_dim: int  # F
    offset: int  # byte offset of the layer's data in the file
    nbytes: int  # 3 * F * D * itemsize
    sha256: str


def ffn_weights(model_or_state_dict: nn.Module | dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(proj_1.weight [2F, D], proj_2.weight [D, F]) of every layer, in layer order."""
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = FFN_KEY.search(key)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if not found:
        raise BundleError("no FFN weights (layers.N.ffn.proj_1.weight / proj_2.weight) in the model")
    layers = []
    for index in range(max(found) + 1):
        pair = found.get(index, {})
        if set(pair) != {"1", "2"}:
            raise BundleError(f"layer {index}: missing ffn.proj_1.weight or ffn.proj_2.weight")
        gate_up, down = pair["1"].detach(), pair["2"].detach()
        if gate_up.dim() != 2 or down.dim() != 2 or gate_up.shape[0] % 2 or \
                gate_up.shape != (2 * down.shape[1], down.shape[0]):
            raise BundleError(f"layer {index}: proj_1 {tuple(gate_up.shape)} and proj_2 {tuple(down.shape)} "
                              "are not a SwiGLU pair [2F, D] and [D, F]")
        layers.append((gate_up, down))
    return layers


def layer_parts(gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """[3, F, D]: gate rows, up rows, down columns (as rows) of one layer."""
    ffn_dim = down.shape[1]
    return torch.stack([gate_up[:ffn_dim], gate_up[ffn_dim:], down.t()])


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def layer_bytes(parts: torch.Tensor, layout: str) -> memoryview:
    """The layer's bytes as stored: [F, 3, D] records ("bundled") or [3, F, D] ("split")."""
    ordered = parts.transpose(0, 1) if layout == "bundled" else parts
    return memoryview(ordered.contiguous().view(torch.uint8).numpy()).cast("B")


def write_bundle(model_or_state_dict: nn.Module | dict[str, torch.Tensor], path: Path, layout: str = "bundled",
                 dtype: torch.dtype | None = None) -> dict:
    """Write every layer's FFN weights to `path` atomically (the whole file or nothing); returns the header.

    `dtype` converts the weights (default: keep the model's); `layout` is "bundled" or "split".
    """
    if layout not in LAYOUTS:
        raise BundleError(f"unknown bundle layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if sys.byteorder != "little":
        raise BundleError("FFN bundles are little-endian; this machine is not")
    weights = ffn_weights(model_or_state_dict)
    dtype = dtype or weights[0][0].dtype
    dtype_name = next((name for name, value in DTYPES.items() if value == dtype), None)
    if dtype_name is None:
        raise BundleError(f"cannot store {dtype} in an FFN bundle (choose from {', '.join(DTYPES)})")
    itemsize = torch.empty(0, dtype=dtype).element_size()
    layers, digests = [], []
    for gate_up, down in weights:
        digest = hashlib.sha256(layer_bytes(layer_parts(gate_up.to(dtype), down.to(dtype)), layout))
        digests.append(digest.hexdigest())
        layers.append({"model_dim": down.shape[0], "ffn_dim": down.shape[1],
                       "nbytes": PARTS * down.shape[0] * down.shape[1] * itemsize})
    # Offsets depend on the header's length, which depends on the offsets: settle in a few rounds.
    data_start = ALIGNMENT
    while True:
        offset = data_start
        for layer, digest in zip(layers, digests):
            layer.update(offset=offset, sha256=digest)
            offset = align(offset + layer["nbytes"])
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "layout": layout, "dtype": dtype_name,
                  "byte_order": "little", "file_size": layers[-1]["offset"] + layers[-1]["nbytes"], "layers": layers}
        header["header_sha256"] = hashlib.sha256(canonical_json(header)).hexdigest()
        encoded = canonical_json(header)
        if align(PREFIX.size + len(encoded)) == data_start:
            break
        data_start = align(PREFIX.size + len(encoded))
    with atomic_writer(Path(path), "wb") as handle:
        handle.write(PREFIX.pack(MAGIC, len(encoded)) + encoded)
        position = PREFIX.size + len(encoded)
        for (gate_up, down), layer in zip(weights, layers):
            handle.write(b"\0" * (layer["offset"] - position))
            handle.write(layer_bytes(layer_parts(gate_up.to(dtype), down.to(dtype)), layout))
            position = layer["offset"] + layer["nbytes"]
    return header


def read_header(descriptor: int, path: Path) -> dict:
    """The validated header of an open bundle file (raises BundleError naming `path`)."""
    size = os.fstat(descriptor).st_size
    prefix = os.pread(descriptor, PREFIX.size, 0)
    if len(prefix) < PREFIX.size:
        what = "truncated" if prefix and MAGIC.startswith(prefix[:len(MAGIC)]) else "not an FFN bundle"
        raise BundleError(f"{path}: {what} (only {size} bytes)")
    magic, header_length = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise BundleError(f"{path}: not an FFN bundle (magic {magic!r}, expected {MAGIC!r})")
    if header_length > MAX_HEADER_BYTES or PREFIX.size + header_length > size:
        raise BundleError(f"{path}: truncated or corrupt header (length {header_length}, file {size} bytes)")
    try:
        header = json.loads(os.pread(descriptor, header_length, PREFIX.size))
        checksum = header.pop("header_sha256")
    except (ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as error:
        raise BundleError(f"{path}: corrupt header ({type(error).__name__})") from error
    if hashlib.sha256(canonical_json(header)).hexdigest() != checksum:
        raise BundleError(f"{path}: header checksum mismatch (corrupt header)")
    if header.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: format {header.get('format')!r}, expected {FORMAT_NAME!r}")
    if header.get("version") != FORMAT_VERSION:
        raise BundleError(f"{path}: format version {header.get('version')!r}, this toolkit reads {FORMAT_VERSION}")
    if header.get("dtype") not in DTYPES or header.get("layout") not in LAYOUTS or header.get("byte_order") != "little":
        raise BundleError(f"{path}: unsupported dtype/layout/byte order {header.get('dtype')!r}/"
                          f"{header.get('layout')!r}/{header.get('byte_order')!r}")
    if size != header["file_size"]:
        what = "truncated" if size < header["file_size"] else "has trailing bytes"
        raise BundleError(f"{path}: {what}: {size} bytes, the header says {header['file_size']}")
    return header


class BundleReader:
    """Positioned reads of neurons from a bundle file. `method`: "pread" (os.preadv straight into the
    caller's buffers) or "mmap" (copies out of a read-only mapping); the benchmark compares them.

    `readahead=False` tells the kernel the reads are random (no readahead past each one).
    `expected_shapes`: [(model_dim, ffn_dim)] per layer of the model being served; a file written
    for another model shape is refused. Use as a context manager, or call close().
    """

    def __init__(self, path: Path, expected_shapes: list[tuple[int, int]] | None = None, method: str = "pread",
                 readahead: bool = True) -> None:
        if method not in ("pread", "mmap"):
            raise BundleError(f"unknown read method {method!r} (choose pread or mmap)")
        self.path, self.method = Path(path), method
        try:
            self.descriptor = os.open(self.path, os.O_RDONLY)
        except OSError as error:
            raise BundleError(f"{path}: cannot open FFN bundle ({error.strerror})") from error
        try:
            self.header = read_header(self.descriptor, self.path)
            self.layers = [BundleLayer(**layer) for layer in self.header["layers"]]
        except (TypeError, KeyError) as error:
            os.close(self.descriptor)
            raise BundleError(f"{path}: corrupt header (bad layer entry)") from error
        except BaseException:
            os.close(self.descriptor)
            raise
        self.layout = self.header["layout"]
        self.dtype = DTYPES[self.header["dtype"]]
        self.itemsize = torch.empty(0, dtype=self.dtype).element_size()
        try:
            self._check_layers(expected_shapes)
        except BaseException:
            os.close(self.descriptor)
            raise
        # Per layer, precomputed for the hot path: where its data starts and one record's size.
        self.layer_offsets = [layer.offset for layer in self.layers]
        self.record_sizes = [PARTS * layer.model_dim * self.itemsize for layer in self.layers]
        self.mapping = mmap.mmap(self.descriptor, 0, access=mmap.ACCESS_READ) if method == "mmap" else None
        self.mapped = memoryview(self.mapping) if self.mapping is not None else None
        if not readahead:
            # Reads of scattered neurons: the kernel's readahead would fetch pages nobody asked for.
            os.posix_fadvise(self.descriptor, 0, 0, os.POSIX_FADV_RANDOM)
            if self.mapping is not None:
                self.mapping.madvise(mmap.MADV_RANDOM)

    def _check_layers(self, expected_shapes: list[tuple[int, int]] | None) -> None:
        if not self.layers:
            raise BundleError(f"{self.path}: corrupt header (no layers)")
        for index, layer in enumerate(self.layers):
            # The checksum catches damage; this catches a well-formed header that lies.
            dims_ok = all(isinstance(value, int) and value > 0
                          for value in (layer.model_dim, layer.ffn_dim, layer.offset, layer.nbytes))
            if not dims_ok or layer.nbytes != PARTS * layer.model_dim * layer.ffn_dim * self.itemsize or \
                    not ALIGNMENT <= layer.offset <= self.header["file_size"] - layer.nbytes:
                raise BundleError(f"{self.path}: corrupt header (layer {index} has an impossible shape or offset)")
        if expected_shapes is not None:
            self.check_shapes(expected_shapes)

    def check_shapes(self, expected_shapes: list[tuple[int, int]]) -> None:
        if len(expected_shapes) != len(self.layers):
            raise BundleError(f"{self.path}: holds {len(self.layers)} FFN layers, the model has {len(expected_shapes)}")
        for index, (layer, (model_dim, ffn_dim)) in enumerate(zip(self.layers, expected_shapes)):
            if (layer.model_dim, layer.ffn_dim) != (model_dim, ffn_dim):
                raise BundleError(f"{self.path}: layer {index} is model_dim {layer.model_dim} x ffn_dim "
                                  f"{layer.ffn_dim}, the model's is {model_dim} x {ffn_dim}")

    def part_bytes(self, layer: int) -> int:
        """Bytes of one row (a gate, up or down part of one neuron)."""
        return self.layers[layer].model_dim * self.itemsize

    def record_bytes(self, layer: int) -> int:
        return self.record_sizes[layer]

    def part_offset(self, layer: int, neuron: int, part: int) -> int:
        entry = self.layers[layer]
        index = neuron * PARTS + part if self.layout == "bundled" else part * entry.ffn_dim + neuron
        return entry.offset + index * self.part_bytes(layer)

    def _read(self, offset: int, destinations: list, expected: int) -> None:
        if self.mapped is None:
            got = os.preadv(self.descriptor, destinations, offset)
        else:
            got = 0
            for destination in destinations:
                length = destination.nbytes
                chunk = self.mapped[offset + got: offset + got + length]
                memoryview(destination).cast("B")[:len(chunk)] = chunk
                got += len(chunk)
        if got != expected:
            raise BundleError(f"{self.path}: truncated: read {got} of {expected} bytes at offset {offset}")

    def read_records_into(self, layer: int, first_neuron: int, destinations: list) -> None:
        """One read of the records of neurons first_neuron, first_neuron + 1, ... (one destination
        buffer of record_bytes each, in that order). Bundled layout only."""
        if self.layout != "bundled":
            raise BundleError(f"{self.path}: layout {self.layout!r} has no per-neuron records")
        size = self.record_sizes[layer]
        self._read(self.layer_offsets[layer] + first_neuron * size, destinations, len(destinations) * size)

    def read_part_into(self, layer: int, neuron: int, part: int, destination) -> None:
        """One read of one part (0 gate, 1 up, 2 down) of one neuron: part_bytes into `destination`."""
        self._read(self.part_offset(layer, neuron, part), [destination], self.part_bytes(layer))

    def read_neurons(self, layer: int, neuron_ids: list[int]) -> torch.Tensor:
        """[n, 3, D] (gate row, up row, down column) of the given neurons, one part read at a time:
        a simple reference path for tests and checks, not the fast one."""
        model_dim = self.layers[layer].model_dim
        out = torch.empty(len(neuron_ids), PARTS, model_dim, dtype=self.dtype)
        raw = out.view(torch.uint8).numpy()  # [n, 3, D * itemsize]
        for row, neuron in enumerate(neuron_ids):
            for part in range(PARTS):
                self.read_part_into(layer, int(neuron), part, memoryview(raw[row, part]))
        return out

    def verify_data(self) -> None:
        """Read every layer and compare its sha256 with the header's (corrupt data -> BundleError)."""
        for index, layer in enumerate(self.layers):
            digest, position, end = hashlib.sha256(), layer.offset, layer.offset + layer.nbytes
            while position < end:
                chunk = os.pread(self.descriptor, min(1 << 22, end - position), position)
                if not chunk:
                    raise BundleError(f"{self.path}: truncated inside layer {index}")
                digest.update(chunk)
                position += len(chunk)
            if digest.hexdigest() != layer.sha256:
                raise BundleError(f"{self.path}: layer {index} data checksum mismatch (corrupt file)")

    def close(self) -> None:
        if self.mapped is not None:
            self.mapped.release()
            self.mapping.close()
            self.mapped = self.mapping = None
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
