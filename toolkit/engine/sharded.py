"""Sharded checkpoints: every rank writes and reads its own shards of the trained weights, the
optimizer state and the EMA through `torch.distributed.checkpoint`, for FSDP2 runs too large to
gather on one rank (`trainer.checkpoint_format: sharded`).

Layout inside the usual `step-NNNNNN/` directory (written under a temporary name by every rank,
renamed by rank 0, pruned as any checkpoint):
    sharded/.metadata        JSON (toolkit.engine.dcp_storage): every tensor's size, dtype, chunks
    sharded/__<rank>_0.distcp  that rank's tensor shards (read with `torch.load(weights_only=True)`)
    sharded.json             the rest of the optimizer state: param groups, non-tensor values
and, as in a full checkpoint, scheduler.json, task_state.json, trainer_state.json and recipe.yaml.
Keys in the shard files are `model/<name>`, `optimizer/<path>` and `ema/<name>`. Loading builds
this run's own (sharded or whole) tensors and lets DCP copy the overlapping chunks into them, so a
checkpoint resumes at any world size, or in one process without FSDP2. Under DDP or in one
process the tensors are whole on every rank; DCP then writes each once, from one rank.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.errors import CheckpointError

# torch.distributed.checkpoint takes seconds to import: toolkit.engine.dcp_storage is imported
# by the functions that save or load shards, not by the trainer that imports this module.
SHARDS_DIRECTORY = "sharded"
METADATA_FILE = ".metadata"  # toolkit.engine.dcp_storage.METADATA_FILE
REST_FILE = "sharded.json"
TENSOR_MARK = "__tensor__"  # {"__tensor__": key}: where a tensor of the shard files goes back


def is_sharded_checkpoint(checkpoint: Path) -> bool:
    return (checkpoint / SHARDS_DIRECTORY / METADATA_FILE).is_file()


def split_tensors(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` (nested dicts and lists) with each tensor moved into `tensors` under its key path
    and replaced by a mark; the rest must be JSON data (optimizer hyperparameters, counters)."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {TENSOR_MARK: key}
    if isinstance(value, dict):
        if not all(isinstance(name, str) for name in value):
            raise CheckpointError(f"{key}: a sharded checkpoint needs string keys, got {list(value)[:3]}")
        return {name: split_tensors(item, f"{key}/{name}", tensors) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [split_tensors(item, f"{key}/{index}", tensors) for index, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"{key}: a sharded checkpoint cannot hold a {type(value).__name__}")


def join_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`split_tensors` undone: every mark replaced by its tensor (KeyError for one not loaded)."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {TENSOR_MARK}:
            return tensors[skeleton[TENSOR_MARK]]
        return {name: join_tensors(item, tensors) for name, item in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_tensors(item, tensors) for item in skeleton]
    return skeleton


def save_tensors(tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """Every rank's local shards into `directory` (a collective when a process group is up)."""
    import torch.distributed.checkpoint as dcp

    from toolkit.engine.dcp_storage import JsonMetadataWriter

    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(tensors, storage_writer=JsonMetadataWriter(directory))


def load_tensors(tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """Fill `tensors` (this rank's shards, or whole tensors) in place from `directory`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from toolkit.engine.dcp_storage import JsonMetadataReader, read_metadata_file

    metadata = read_metadata_file(directory / METADATA_FILE)  # refusals first, on every rank
    missing = [key for key in tensors if key not in metadata.state_dict_metadata]
    if missing:
        raise CheckpointError(f"{directory}: does not match this run: {len(missing)} tensors missing "
                              f"(e.g. {missing[:3]})")
    for key, tensor in tensors.items():
        saved = metadata.state_dict_metadata[key].size
        if tuple(saved) != tuple(tensor.shape):
            raise CheckpointError(f"{directory}: '{key}' has shape {tuple(saved)} but this run's is {tuple(tensor.shape)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(tensors, storage_reader=JsonMetadataReader(directory))
    except CheckpointException as error:
        failure = first_failure(error)
        if isinstance(failure, CheckpointError):  # a refused item
            raise failure from error
        raise CheckpointError(f"{directory}: unreadable shards ({type(failure).__name__}: "
                              f"{' '.join(str(failure).split())})") from error


def read_full_tensors(directory: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a sharded checkpoint's shard directory whose keys start with `prefix`, whole,
    in this process (no process group): for tools that read a sharded run on one machine."""
    from toolkit.engine.dcp_storage import read_metadata_file

    metadata = read_metadata_file(directory / METADATA_FILE)
    tensors = {key: torch.empty(tuple(item.size), dtype=item.properties.dtype)
               for key, item in metadata.state_dict_metadata.items() if key.startswith(prefix)}
    load_tensors(tensors, directory)
    return tensors


def read_model_weights(checkpoint: Path, model_name: str, trained_count: int) -> dict[str, torch.Tensor]:
    """One trained model's whole weights from a sharded checkpoint (what `model-<name>.safetensors`
    holds in a full one). The trainer saves the trained models as one module: the model itself
    when there is one, else a ModuleDict keyed by model name."""
    prefix = "model/" if trained_count == 1 else f"model/{model_name}."
    return _without_prefix(read_full_tensors(checkpoint / SHARDS_DIRECTORY, prefix), prefix)


def first_failure(error: BaseException) -> BaseException:
    """The first failing rank's own exception inside DCP's CheckpointException (a BaseException
    that carries every failing rank's traceback), for a one-line report; any other as it is."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(error, CheckpointException) and error.failures:
        return error.failures[min(error.failures)][0]
    return error


def _without_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}


class ShardedTrainingState:
    """The trained models' weights, the optimizer state and the EMA as local shards.

    `save` and `load` are collectives: every rank calls them with the same directory.
    """

    def __init__(self, trained: nn.Module, optimizer: torch.optim.Optimizer, ema: Any | None) -> None:
        self.trained = trained  # the trained models as one module (a ModuleDict for several)
        self.optimizer = optimizer
        self.ema = ema  # toolkit.engine.ema.ExponentialMovingAverage: its shadow holds shards too

    def _local(self) -> tuple[dict[str, torch.Tensor], Any]:
        """This rank's tensors by key, and the JSON rest of the optimizer state."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        tensors = {f"model/{name}": tensor for name, tensor in get_model_state_dict(self.trained).items()}
        # Without full_state_dict: DTensor shards stay shards, nothing is gathered.
        optimizer_rest = split_tensors(get_optimizer_state_dict(self.trained, self.optimizer), "optimizer", tensors)
        if self.ema is not None:
            tensors.update({f"ema/{name}": tensor for name, tensor in self.ema.shadow.items()})
        return tensors, optimizer_rest

    def save(self, checkpoint: Path) -> dict[str, Any]:
        """Write this rank's shards under `checkpoint/sharded/`; returns the files rank 0 adds."""
        tensors, optimizer_rest = self._local()
        save_tensors({key: tensor.detach() for key, tensor in tensors.items()}, checkpoint / SHARDS_DIRECTORY)
        return {REST_FILE: {"optimizer": optimizer_rest}}

    def load(self, checkpoint: Path) -> None:
        """Read this run's shards back from a checkpoint written at any world size."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        rest_path = checkpoint / REST_FILE
        try:
            rest = json.loads(rest_path.read_text())
            optimizer_rest = rest["optimizer"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{rest_path}: unreadable ({type(error).__name__}: {error})") from error
        tensors, _ = self._local()  # this run's tensors, shaped and placed as it holds them
        targets = {key: _writable(tensor) for key, tensor in tensors.items()}
        load_tensors(targets, checkpoint / SHARDS_DIRECTORY)
        set_model_state_dict(self.trained, _without_prefix(targets, "model/"))
        try:
            set_optimizer_state_dict(self.trained, self.optimizer, join_tensors(optimizer_rest, targets))
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{rest_path}: does not match this run's optimizer ({error})") from error
        if self.ema is not None:
            for name, average in self.ema.shadow.items():
                average.copy_(targets[f"ema/{name}"])


def _writable(tensor: torch.Tensor) -> torch.Tensor:
    """A fresh tensor of the same kind to load into (DCP copies into it in place), so that
    nothing live is overwritten before every shard has been read."""
    return tensor.detach().clone()
