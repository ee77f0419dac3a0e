"""The checkpointed state of a run: a named map of objects that each save and load themselves.

The trainer hands `save_states` / `load_states` a map of file name -> `CheckpointState` (weights of
each trained model, optimizer, schedule, EMA, the task's own state, progress); nothing here reads
the trainer. Every
rank calls `state_dict()` (FSDP2 gathers full tensors then; RNG states and data positions are
gathered from every rank) and rank 0 writes. Every rank reads the files back on resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from toolkit import checkpoint as ckpt
from toolkit.engine import distributed, rng
from toolkit.errors import CheckpointError, TrainingError


class CheckpointState(Protocol):
    """One file of a checkpoint. `state_dict` is collective: every rank calls it. `fallback`, when
    not None, gives the state to load when a checkpoint lacks the file (an older layout)."""

    fallback: Callable[[], Any] | None

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


def is_sharded(model: nn.Module) -> bool:
    # Checked on the module, not its parameters: after a forward without backward (evaluation)
    # FSDP2 may leave the root's parameters unsharded plain tensors.
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule) or any(isinstance(m, FSDPModule) for m in model.children())


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True)


def gather_full(value: Any) -> Any:
    """Replace every DTensor in a nested state dict by its full tensor (a collective: all ranks call).

    The state-dict API's own `cpu_offload` leaves DTensors in place when the mesh is on the CPU
    (gloo), so the gathering is done here, the same way on every device.
    """
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: gather_full(item) for key, item in value.items()}
    if isinstance(value, list):
        return [gather_full(item) for item in value]
    return value


class ModelWeights:
    """The full, unsharded weights of one trained model."""

    fallback = None  # required

    def __init__(self, model: nn.Module, file_name: str) -> None:
        self.model = model
        self.file_name = file_name  # named in errors

    def state_dict(self) -> dict[str, torch.Tensor]:
        if is_sharded(self.model):
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            return gather_full(get_model_state_dict(self.model, options=_full_options()))
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if is_sharded(self.model):
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(self.model, state, options=_full_options())
        else:
            ckpt.load_state_strict(self.model, state, Path(self.file_name))


class OptimizerState:
    """The optimizer over `parameters_of` (the trained models, one module or a ModuleDict).

    Saved in one layout whatever the strategy: torch's full optimizer state dict, keyed by
    parameter name (`get_optimizer_state_dict`), so that a checkpoint of a single process, of DDP
    and of FSDP2 (gathered whole) resumes under any of them and at any world size. A checkpoint
    in the older layout (`optimizer.state_dict()`, keyed by position) still loads.
    """

    fallback = None  # required

    def __init__(self, optimizer: torch.optim.Optimizer, parameters_of: nn.Module) -> None:
        self.optimizer = optimizer
        self.parameters_of = parameters_of

    def _named(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return gather_full(get_optimizer_state_dict(self.parameters_of, self.optimizer, options=_full_options()))

    def state_dict(self) -> dict[str, Any]:
        return self._named()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        try:
            if _keyed_by_position(state):
                if not is_sharded(self.parameters_of):
                    self.optimizer.load_state_dict(state)
                    return
                state = _keyed_by_name(state, self._named())
            set_optimizer_state_dict(self.parameters_of, self.optimizer, state, options=_full_options())
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"optimizer.pt: does not match this run's optimizer ({error})") from error


def _keyed_by_position(state: dict[str, Any]) -> bool:
    """True for `optimizer.state_dict()`'s layout (parameters numbered), False for names."""
    groups = state.get("param_groups") or [{}]
    return any(isinstance(item, int) for group in groups for item in group.get("params", []))


def _keyed_by_name(state: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """A position-keyed optimizer state renamed to parameter names, the order of `reference`'s
    param groups (this optimizer's own, named) telling which number is which parameter."""
    names = [name for group in reference["param_groups"] for name in group["params"]]
    numbers = [number for group in state["param_groups"] for number in group["params"]]
    if len(names) != len(numbers):
        raise ValueError(f"it holds {len(numbers)} parameters, this run's optimizer {len(names)}")
    name_of = dict(zip(numbers, names))
    return {"state": {name_of[int(number)]: value for number, value in state["state"].items()},
            "param_groups": [dict(group, params=[name_of[n] for n in group["params"]])
                             for group in state["param_groups"]]}


class Progress:
    """The step count, every rank's data position and every rank's RNG states.

    Resuming at another world size keeps the global batch order (data sources re-split rank 0's
    position) but cannot keep per-rank RNG streams, which are then left as seeded.
    """

    fallback = None  # required

    def __init__(self, train_data: Any, rank: int, world_size: int) -> None:
        self.step = 0
        self.train_data = train_data
        self.rank = rank
        self.world_size = world_size

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "world_size": self.world_size,
            "data": distributed.gather_objects(self.train_data.state_dict()),
            "rng": distributed.gather_objects(rng.capture()),
        }
        return json.loads(json.dumps(state))  # JSON-able, as written

    def load_state_dict(self, state: dict[str, Any]) -> None:
        same_layout = state.get("world_size") == self.world_size
        self.train_data.load_state_dict(state["data"][self.rank if same_layout else 0])
        if same_layout:
            rng.restore(state["rng"][self.rank])
        self.step = int(state["step"])


class StateOf:
    """Adapts any object with `state_dict` / `load_state_dict` (a scheduler, the EMA); `fallback`
    supplies the state when an older checkpoint lacks the file (None: the file is required)."""

    def __init__(self, target: Any, fallback: Callable[[], Any] | None = None) -> None:
        self.target = target
        self.fallback = fallback

    def state_dict(self) -> Any:
        return self.target.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.target.load_state_dict(state)


class TaskStateFile:
    """A task's own state (toolkit.capabilities.TaskState) as `task_state.json`.

    Checked to be JSON-able when saved, so that a task returning a tensor or an object fails at
    its first save with one line instead of writing something a resume cannot read. A checkpoint
    without the file (written before the task kept state) leaves the task as its config built
    it. Rank 0's state is written and every rank loads it: a task whose state could differ
    between ranks keeps it in step itself (from all-reduced figures).
    """

    def __init__(self, task: Any, task_name: str) -> None:
        self.task = task
        self.task_name = task_name
        self.fallback = task.task_state_dict  # the state as built: loading it changes nothing

    def state_dict(self) -> dict[str, Any]:
        state = self.task.task_state_dict()
        try:
            return json.loads(json.dumps(state))
        except (TypeError, ValueError) as error:
            raise TrainingError(f"task '{self.task_name}': task_state_dict() is not JSON-able ({error}); "
                                "it must hold only numbers, strings, lists and maps") from error

    def load_state_dict(self, state: Any) -> None:
        try:
            self.task.load_task_state_dict(state)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"task_state.json: does not match task '{self.task_name}' "
                                  f"({type(error).__name__}: {error})") from error


def save_states(states: dict[str, CheckpointState]) -> dict[str, Any]:
    """Every state's content, by file name (all ranks call; only rank 0's result is written)."""
    return {name: state.state_dict() for name, state in states.items()}


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        return ckpt.load_weights(path)
    if path.suffix == ".pt":
        return ckpt.load_pickle_free(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from error


def load_states(checkpoint: Path, states: dict[str, CheckpointState]) -> None:
    """Restore every state from its file in `checkpoint` (all ranks). The progress file goes last,
    so that the RNG state it restores is the last thing set before training continues."""
    ordered = sorted(states, key=lambda name: name == "trainer_state.json")
    for name in ordered:
        state = states[name]
        path = checkpoint / name
        if not path.is_file():
            fallback = state.fallback
            if fallback is None:
                raise CheckpointError(f"{checkpoint}: cannot resume training from it, {name} is missing")
            state.load_state_dict(fallback())
            continue
        content = _read(path)
        try:
            state.load_state_dict(content)
        except CheckpointError as error:
            raise CheckpointError(f"{checkpoint}/{error.message}", hint=error.hint) from error
