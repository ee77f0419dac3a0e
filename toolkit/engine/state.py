"""Turning a trainer's live state into checkpoint content and back (DDP, FSDP2 or one process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from toolkit import checkpoint as ckpt
from toolkit.engine.checkpoint import CheckpointContent
from toolkit.engine import distributed, rng
from toolkit.errors import CheckpointError

if TYPE_CHECKING:
    from toolkit.engine.trainer import Trainer


def _is_sharded(model: nn.Module) -> bool:
    # Checked on the module, not its parameters: after a forward without backward (evaluation)
    # FSDP2 may leave the root's parameters unsharded plain tensors.
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True)


def _gather_full(value: Any) -> Any:
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
        return {key: _gather_full(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_gather_full(item) for item in value]
    return value


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full, unsharded weights (all ranks must call under FSDP2)."""
    if _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return _gather_full(get_model_state_dict(model, options=_full_options()))
    return model.state_dict()


def training_state_dicts(trainer: "Trainer") -> CheckpointContent:
    model = trainer.raw_model
    if _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optimizer = _gather_full(get_optimizer_state_dict(model, trainer.optimizer, options=_full_options()))
    else:
        optimizer = trainer.optimizer.state_dict()
    trainer_state = {
        "step": trainer.step,
        "world_size": trainer.context.world_size,
        "data": distributed.gather_objects(trainer.train_data.state_dict()),
        "rng": distributed.gather_objects(rng.capture()),
    }
    return CheckpointContent(
        step=trainer.step,
        model=model_state(model),
        optimizer=optimizer,
        scheduler=trainer.scheduler.state_dict() if trainer.scheduler is not None else {},
        trainer_state=json.loads(json.dumps(trainer_state)),
        recipe_yaml=trainer.recipe.to_yaml(),
        ema=trainer.ema.state_dict() if trainer.ema is not None else None,
    )


def load_training_state(trainer: "Trainer", checkpoint: Path) -> int:
    """Restore weights, optimizer, schedule, EMA, data position and RNG; returns the step."""
    state = ckpt.read_trainer_state(checkpoint)
    model = trainer.raw_model
    weights = ckpt.load_weights(checkpoint / "model.safetensors")
    optimizer_path = checkpoint / "optimizer.pt"
    if not optimizer_path.is_file():
        raise CheckpointError(f"{checkpoint}: cannot resume training from it, optimizer.pt is missing")
    optimizer_state = ckpt.load_pickle_free(optimizer_path)
    if _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, weights, options=_full_options())
        set_optimizer_state_dict(model, trainer.optimizer, optimizer_state, options=_full_options())
    else:
        ckpt.load_state_strict(model, weights, checkpoint / "model.safetensors")
        try:
            trainer.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"{optimizer_path}: does not match this run's optimizer ({error})") from error
    if trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(json.loads((checkpoint / "scheduler.json").read_text()))
    if trainer.ema is not None:
        ema_path = checkpoint / "ema.safetensors"
        trainer.ema.load_state_dict(ckpt.load_weights(ema_path) if ema_path.is_file() else model_state(model))
    rank = trainer.context.rank
    same_layout = state.get("world_size") == trainer.context.world_size
    trainer.train_data.load_state_dict(state["data"][rank if same_layout else 0])
    if same_layout:
        rng.restore(state["rng"][rank])
    return int(state["step"])


