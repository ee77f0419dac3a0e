"""`torch.distributed.checkpoint` storage whose metadata is JSON, never pickle.

DCP's FileSystemWriter pickles the checkpoint's `.metadata` and FileSystemReader unpickles it, and
the default load planner reads non-tensor (BYTE_IO) items with `torch.load(weights_only=False)`.
Both would let a checkpoint run code when loaded. This pair keeps DCP's `.distcp` shard files
(tensors only, read with `weights_only=True`) but writes `.metadata` as JSON: each tensor's dtype,
global size and chunks (offset and size of every shard), where each chunk's bytes lie, and the
planner's key paths. The writer refuses non-tensor items; the reader refuses a checkpoint that
holds any, a pickled `.metadata` and malformed JSON, each as one CheckpointError line naming the
file. Only tensors go through DCP; the toolkit keeps everything else in its JSON files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, Metadata,
                                                   MetadataIndex, StorageMeta, TensorProperties,
                                                   TensorStorageMetadata)
from torch.distributed.checkpoint.planner import LoadItemType

from toolkit.errors import CheckpointError
from toolkit.files import atomic_write_text

METADATA_FILE = ".metadata"
FORMAT = "toolkit-dcp-json"  # the first key of the file, so a reader knows it holds no pickle
PICKLE_OPCODE = 0x80  # the first byte of every pickle of protocol 2 or later


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: Any) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def encode_metadata(metadata: Metadata) -> dict[str, Any]:
    """DCP's metadata as plain JSON data; a non-tensor item is refused (it would be pickled)."""
    tensors = {}
    for key, item in metadata.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata):
            raise CheckpointError(f"'{key}' is not a tensor ({type(item).__name__}); a sharded checkpoint "
                                  "holds only tensors, the rest goes in the toolkit's JSON files")
        tensors[key] = {"dtype": _dtype_name(item.properties.dtype), "size": list(item.size),
                        "requires_grad": bool(item.properties.requires_grad),
                        "chunks": [{"offsets": list(chunk.offsets), "sizes": list(chunk.sizes)}
                                   for chunk in item.chunks]}
    storage = [{"fqn": index.fqn, "offset": None if index.offset is None else list(index.offset),
                "index": index.index, "path": info.relative_path, "byte_offset": info.offset,
                "length": info.length, "transforms": list(info.transform_descriptors or [])}
               for index, info in (metadata.storage_data or {}).items()]
    planner = metadata.planner_data
    if planner is not None:  # the default planner's key -> path of nested keys
        planner = {key: list(path) for key, path in planner.items()}
    return {"format": FORMAT, "version": metadata.version, "tensors": tensors, "storage": storage,
            "planner_data": planner}


def decode_metadata(data: Any) -> Metadata:
    """`encode_metadata`'s data back as DCP's Metadata; ValueError/KeyError/TypeError when malformed."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not {FORMAT} metadata")
    state = {}
    for key, item in data["tensors"].items():
        if not isinstance(item, dict) or "chunks" not in item:
            raise ValueError(f"'{key}' is not a tensor")
        properties = TensorProperties(dtype=_dtype(item["dtype"]), requires_grad=bool(item["requires_grad"]))
        chunks = [ChunkStorageMetadata(offsets=torch.Size(chunk["offsets"]), sizes=torch.Size(chunk["sizes"]))
                  for chunk in item["chunks"]]
        state[key] = TensorStorageMetadata(properties=properties, size=torch.Size(item["size"]), chunks=chunks)
    storage = {}
    for entry in data["storage"]:
        index = MetadataIndex(entry["fqn"], entry["offset"], entry["index"])
        storage[index] = _StorageInfo(relative_path=str(entry["path"]), offset=int(entry["byte_offset"]),
                                      length=int(entry["length"]),
                                      transform_descriptors=[str(name) for name in entry["transforms"]] or None)
    planner = data.get("planner_data")
    if planner is not None:
        planner = {key: tuple(path) for key, path in planner.items()}
    return Metadata(state_dict_metadata=state, planner_data=planner, storage_data=storage,
                    storage_meta=StorageMeta(), version=data.get("version"))


def read_metadata_file(path: Path) -> Metadata:
    """A `.metadata` file written by JsonMetadataWriter; anything else is refused without unpickling."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: unreadable ({error.strerror or error})") from error
    if raw[:1] == bytes([PICKLE_OPCODE]):
        raise CheckpointError(f"{path}: refused to load: pickled DCP metadata (toolkit checkpoints "
                              "load without unpickling; this one holds JSON metadata only)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON metadata ({error})") from error
    byte_items = [key for key, item in (data.get("tensors") or {}).items()
                  if isinstance(item, dict) and "chunks" not in item] if isinstance(data, dict) else []
    if byte_items:
        raise CheckpointError(f"{path}: refused to load: holds non-tensor (BYTE_IO) items, e.g. '{byte_items[0]}' "
                              "(they would be unpickled)")
    try:
        return decode_metadata(data)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: malformed DCP metadata ({type(error).__name__}: {error})") from error


class JsonMetadataWriter(FileSystemWriter):
    """DCP's file-system writer, one `.distcp` file per rank, with `.metadata` written as JSON."""

    def finish(self, metadata: Metadata, results: list) -> None:
        # What the parent's finish does, but JSON: the coordinator alone calls it, after every
        # rank has written its shards.
        metadata.version = "1.0.0"
        metadata.storage_data = {result.index: result.storage_data for rank_results in results
                                 for result in rank_results}
        atomic_write_text(Path(self.path) / METADATA_FILE, json.dumps(encode_metadata(metadata)))


class JsonMetadataReader(FileSystemReader):
    """DCP's file-system reader that reads JSON `.metadata` and refuses any non-tensor item."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata_file(Path(self.path) / METADATA_FILE)
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def read_data(self, plan, planner):
        # Never reached through read_metadata's checks; kept so that no path unpickles an item.
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                raise CheckpointError(f"{Path(self.path) / METADATA_FILE}: refused to load non-tensor item "
                                      f"'{item.storage_index.fqn}'")
        return super().read_data(plan, planner)
