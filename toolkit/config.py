"""Typed configs that the recipe layer and the engine share, and the builder that fills them.

The `trainer:` and `dist:` sections are the core's own; `build_config` turns any section (a plugin
component's too) into its dataclass, naming the key path of whatever is wrong. This module sits
below both `toolkit.recipe` and `toolkit.engine`, so neither imports the other for its types.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.errors import RecipeError
from toolkit.registry import closest


class Precision(str, enum.Enum):
    """How the trainer runs the forward and backward passes."""

    fp32 = "fp32"
    bf16 = "bf16"  # autocast; weights and optimizer state stay fp32


class Strategy(str, enum.Enum):
    """How trained models are wrapped when more than one process runs (under torchrun)."""

    ddp = "ddp"
    fsdp = "fsdp"  # FSDP2 `fully_shard`, one unit per block the model declares


@dataclass
class TrainerConfig:
    """The `trainer:` section of a recipe: the loop, precision, logging and checkpoints."""

    max_steps: int = 100  # optimizer steps
    out_dir: str = "runs/default"  # run directory: recipe.yaml, metrics.jsonl, step-NNNNNN/
    seed: int = 0
    precision: Precision = Precision.fp32
    grad_accum: int = 1  # micro-steps per optimizer step
    clip_grad: float = 1.0  # max global grad norm; 0 turns clipping off
    log_every: int = 10  # steps between metrics.jsonl lines
    eval_every: int = 0  # steps between validations; 0 = only at the end
    eval_batches: int = 0  # validation micro-batches per evaluation, all ranks together; 0 = all
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 3  # checkpoints kept; older ones are deleted
    # >0 keeps an exponential moving average of the weights (saved too): ema = decay * ema +
    # (1 - decay) * weights after each step, so 0.9995 averages over about 2000 steps.
    ema_decay: float = 0.0
    peak_flops: float = 0.0  # hardware peak FLOP/s for MFU; 0 = measure a matmul at start
    compile: bool = False  # torch.compile the trained models
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    progress: bool = True  # progress bar on stderr (rank 0)

    def __post_init__(self) -> None:
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (the weight of the old average), got {self.ema_decay}")


@dataclass
class DistConfig:
    """The `dist:` section: how trained models are wrapped when run under torchrun."""

    strategy: Strategy = Strategy.ddp
    backend: str = "auto"  # "auto" = nccl on CUDA, gloo on CPU
    device: str = "auto"  # "auto" = cuda if available, else cpu


def _field_types(config_class: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class)}


def _check_keys(config_class: type, values: Any, path: str) -> None:
    """Unknown keys, recursively through nested dataclasses, with a did-you-mean."""
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: expected a mapping of {config_class.__name__} fields, got {values!r}")
    types = _field_types(config_class)
    for key, value in values.items():
        if key not in types:
            suggestion = closest(str(key), list(types))
            raise RecipeError(
                f"{path}.{key}: unknown key for {config_class.__name__}",
                hint=f"did you mean '{suggestion}'?" if suggestion else f"valid keys: {', '.join(types)}",
            )
        if dataclasses.is_dataclass(types[key]) and isinstance(value, dict):
            _check_keys(types[key], value, f"{path}.{key}")


def build_config(config_class: type, values: dict[str, Any], path: str) -> Any:
    """`config_class` filled from `values`, with unknown keys and wrong types reported by path.

    Enumeration fields take their members' names (`precision: bf16`); any other value is an error
    listing the valid ones.
    """
    _check_keys(config_class, values, path)
    try:
        structured = OmegaConf.merge(OmegaConf.structured(config_class), values)
        return OmegaConf.to_object(structured)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or ""
        message = str(error).splitlines()[0]
        location = f"{path}.{key}" if key else path
        raise RecipeError(f"{location}: {message}") from error
    except (TypeError, ValueError) as error:  # raised by a config's __post_init__ checks
        raise RecipeError(f"{path}: {error}") from error
