"""Typed configs that the recipe layer and the engine share, and the builder that fills them.

The `trainer:` and `dist:` sections are the core's own; `build_config` turns any section (a plugin
component's too) into its dataclass, naming the key path of whatever is wrong. This module sits
below both `toolkit.recipe` and `toolkit.engine`, so neither imports the other for its types.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.errors import RecipeError
from toolkit.registry import closest


class InvalidField(ValueError):
    """Raised by a config's `__post_init__` for one field's value; `build_config` reports it under
    the field's key path (`optim.lr: must be > 0, got -1`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


class Precision(str, enum.Enum):
    """How the trainer runs the forward and backward passes."""

    fp32 = "fp32"
    bf16 = "bf16"  # autocast; weights and optimizer state stay fp32


class CheckpointFormat(str, enum.Enum):
    """How the trainer writes its checkpoints (a resume reads either, whatever this says)."""

    full = "full"  # whole tensors gathered to rank 0: model.safetensors, optimizer.pt, ema.safetensors
    sharded = "sharded"  # each rank writes its own shards (torch.distributed.checkpoint), see toolkit.engine.sharded


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
    # full: the weights, optimizer and EMA gathered whole and written by rank 0 (safetensors, for
    # models that fit on one rank). sharded: every rank writes its own FSDP2 shards to a sharded/
    # folder (torch.distributed.checkpoint, JSON metadata, nothing pickled), nothing gathered;
    # resumable at any world size. Under ddp or one process the tensors are whole, written once.
    checkpoint_format: CheckpointFormat = CheckpointFormat.full
    # >0 keeps an exponential moving average of the weights (saved too): ema = decay * ema +
    # (1 - decay) * weights after each step, so 0.9995 averages over about 2000 steps.
    ema_decay: float = 0.0
    peak_flops: float = 0.0  # hardware peak FLOP/s for MFU; 0 = measure a matmul at start
    compile: bool = False  # torch.compile the trained models
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    progress: bool = True  # a progress bar on stderr (rank 0) when it is a terminal; else plain lines
    # plain lines (step, loss, throughput, lr, eta) come every log_every steps, at most one per this
    # many seconds (the first and last always); 0 = every log_every step
    progress_every_s: float = 30.0

    def __post_init__(self) -> None:
        if self.grad_accum < 1:
            raise InvalidField("grad_accum", f"must be >= 1, got {self.grad_accum}")
        for name in ("max_steps", "log_every", "eval_every", "eval_batches", "save_every", "keep_last", "threads",
                     "clip_grad", "peak_flops", "progress_every_s"):
            if getattr(self, name) < 0:
                raise InvalidField(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InvalidField("ema_decay", f"must be in [0, 1) (the weight of the old average), got {self.ema_decay}")


@dataclass
class DistConfig:
    """The `dist:` section: how trained models are wrapped when run under torchrun."""

    strategy: Strategy = Strategy.ddp
    backend: str = "auto"  # "auto" = nccl on CUDA, gloo on CPU
    device: str = "auto"  # "auto" = cuda if available, else cpu
    # fsdp only: false keeps each block's parameters gathered from its forward until its backward
    # (sharding only gradients and optimizer state between steps, like ZeRO-2): one all-gather per
    # step instead of two, for the memory of whole parameters during the step
    reshard_after_forward: bool = True


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
    except InvalidField as error:
        raise RecipeError(f"{path}.{error.field}: {error.message}") from error
    except (TypeError, ValueError) as error:  # raised by a config's __post_init__ checks
        raise RecipeError(f"{path}: {error}") from error


@dataclass
class FieldDoc:
    """One config field as `--help` and `--list-options` show it."""

    name: str
    default: Any
    help: str


def describe_config(config_class: type) -> list[FieldDoc]:
    """Each field of a config dataclass with its default and help: `metadata["help"]`, else
    the comment at the end of its line or on the lines just above it in the class's source."""
    comments = _field_comments(config_class)
    docs = []
    for item in dataclasses.fields(config_class):
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = "(required)"
        text = item.metadata.get("help") or comments.get(item.name, "")
        if isinstance(default, enum.Enum):
            choices = ", ".join(member.value for member in type(default))
            default, text = default.value, f"{text} (one of: {choices})".strip()
        docs.append(FieldDoc(item.name, default, text))
    return docs


def _field_comments(config_class: type) -> dict[str, str]:
    """Field name -> its comment, from the class and then its bases (an inherited field keeps its help)."""
    comments: dict[str, str] = {}
    for klass in config_class.__mro__:
        if dataclasses.is_dataclass(klass):
            for name, text in _class_comments(klass).items():
                if text:
                    comments.setdefault(name, text)
    return comments


def _class_comments(config_class: type) -> dict[str, str]:
    try:
        lines = inspect.getsource(config_class).splitlines()
    except (OSError, TypeError):  # no source shipped (a frozen or compiled plugin): no help text
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        name, colon, rest = stripped.partition(":")
        if colon and name.isidentifier() and not stripped.startswith(("def ", "class ")):
            trailing = rest.partition("  #")[2].strip() if "  #" in rest else ""
            comments.setdefault(name, " ".join([*above, trailing]).strip())  # a method's local comes later
        above = []
    return comments


def format_config(config_class: type, prefix: str = "") -> list[str]:
    """`describe_config` as aligned lines, `prefix.name=default  help`, the help wrapped under itself."""
    docs = describe_config(config_class)
    keys = [f"{prefix}{doc.name}={_yaml_value(doc.default)}" for doc in docs]
    width = max((len(key) for key in keys), default=0)
    lines = []
    for key, doc in zip(keys, docs):
        wrapped = textwrap.wrap(doc.help, width=max(40, 100 - width)) or [""]
        lines.append(f"  {key:<{width}}  {wrapped[0]}".rstrip())
        lines.extend(f"  {'':<{width}}  {more}" for more in wrapped[1:])
    return lines


def _yaml_value(value: Any) -> str:
    """A default as an override would spell it (`true`, `null`, `[0.9, 0.999]`)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value) if value != "" else '""'
