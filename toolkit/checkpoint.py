"""The public checkpoint API: find a run's checkpoints, read its recipe and weights, build its model.

Plugins and tools use this module, never the engine's internals. Layout of `RUN_DIR/step-000100/`:
    model.safetensors    weights of the trained model (tied tensors stored once; aliases in metadata)
    <name>.safetensors   weights of each further trained model of a many-model task
    ema.safetensors      EMA weights, when the run keeps an EMA
    optimizer.pt         optimizer state (tensors and numbers only; read with weights_only=True)
    scheduler.json       learning-rate schedule state
    task_state.json      the task's own state, when it keeps one (an adaptive KL coefficient)
    trainer_state.json   step, data positions and RNG states of every rank
    recipe.yaml          the fully resolved recipe of the run
A sharded checkpoint (`trainer.checkpoint_format: sharded`) holds `sharded/` (every rank's tensor
shards, JSON metadata) and `sharded.json` instead of the weights, optimizer and EMA files.

Nothing here unpickles arbitrary objects: weights are safetensors, the optimizer file is read with
`torch.load(weights_only=True)`, everything else is JSON or YAML.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from toolkit.config import build_config
from toolkit.engine.sharded import is_sharded_checkpoint  # light: DCP is imported only to read shards
from toolkit.errors import CheckpointError, RecipeError
from toolkit.registry import Component

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{6,})$")
REQUIRED_FILES = ("trainer_state.json", "recipe.yaml")  # and at least one model weights file
SINGLE_MODEL = "model"  # the model of a recipe's `model:` section
ALIASES_KEY = "toolkit.aliases"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def weights_file(model_name: str) -> str:
    """The weights file of one trained model: `model.safetensors` for a recipe's `model:` section,
    `model-<name>.safetensors` for each trained model under `models:`."""
    return "model.safetensors" if model_name == SINGLE_MODEL else f"model-{model_name}.safetensors"


def _holds_weights(directory: Path) -> bool:
    return any(directory.glob("model*.safetensors")) or is_sharded_checkpoint(directory)


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a `step-NNNNNN` directory."""
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (temporary ones are never listed)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint or run directory, checked for completeness."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if path.is_dir() and not _holds_weights(path) and not (path / "trainer_state.json").exists():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"{path}: not a checkpoint (no model.safetensors) and holds no step-NNNNNN/ checkpoints"
            )
        path = latest
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not _holds_weights(path):
        missing.insert(0, "model.safetensors")
    if missing:
        raise CheckpointError(f"{path}: not a complete checkpoint, missing {', '.join(missing)}")
    return path


# ---------------------------------------------------------------------------------------------
# Weights


def _view_identity(tensor: torch.Tensor) -> tuple:
    """Two state-dict entries are one tensor (tied) only if they view the same memory the same way:
    a transposed view of a weight shares its storage, offset and shape but not its strides."""
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Save a state dict as safetensors, storing tensors that share memory (tied weights) once."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner_by_storage: dict[tuple, str] = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        try:
            identity = _view_identity(tensor)
        except RuntimeError:  # FSDP's gathered tensors can hide their storage: copy, no aliasing
            tensor = tensor.clone()
            identity = _view_identity(tensor)
        if identity in owner_by_storage:
            aliases[key] = owner_by_storage[identity]
            continue
        owner_by_storage[identity] = key
        unique[key] = tensor.to("cpu").contiguous()
    save_file(unique, str(path), metadata={ALIASES_KEY: json.dumps(aliases)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors weights file (aliases restored). Never unpickles anything."""
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    for alias, owner in json.loads(metadata.get(ALIASES_KEY, "{}")).items():
        state[alias] = state[owner]
    return state


def load_pickle_free(path: Path) -> Any:
    """`torch.load` restricted to tensors and plain containers; refuses any other pickled object."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled objects other than tensors and plain data"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {error})".splitlines()[0]) from error


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{checkpoint / 'trainer_state.json'}: unreadable ({error})") from error


def read_recipe(checkpoint: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load((checkpoint / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: unreadable ({error})".splitlines()[0]) from error
    if not isinstance(values, dict):
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: not a recipe mapping")
    return values


# ---------------------------------------------------------------------------------------------
# Loading a trained model for inference


@dataclass
class LoadedModel:
    model: nn.Module
    recipe: dict[str, Any]
    checkpoint_dir: Path
    run_dir: Path


def model_sections(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A saved recipe's models: name -> section (`model:` is the one model named "model")."""
    if recipe.get("model") is not None:
        return {SINGLE_MODEL: dict(recipe["model"])}
    several = recipe.get("models")
    if not isinstance(several, dict):
        return {}
    return {str(name): dict(section) for name, section in several.items() if section is not None}


def _pick_model(checkpoint: Path, sections: dict[str, dict[str, Any]], name: str | None) -> str:
    if name is not None:
        if name not in sections:
            raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: has no model '{name}'",
                                  hint=f"its models: {', '.join(sections) or 'none'}")
        return name
    trained = [key for key, section in sections.items() if not section.get("frozen", False)]
    if len(trained) != 1:
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: names {len(trained)} trained models; say which",
                              hint=f"its trained models: {', '.join(trained) or 'none'}")
    return trained[0]


@dataclass
class ModelConfig:
    """The model a run's recipe names, before it is built: its registered component and typed config."""

    name: str  # "model" for a `model:` section, else its key under `models:`
    component: Component
    config: Any  # an instance of component.config_class (None when the model takes no config)
    checkpoint_dir: Path  # the checkpoint whose recipe.yaml names the model


def _chosen_section(checkpoint: Path, recipe: dict[str, Any], name: str | None) -> tuple[str, dict[str, Any]]:
    """The picked model's name and recipe section (`frozen`, `source` kept, `dtype` dropped)."""
    sections = model_sections(recipe)
    if not sections:
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: has no model.name")
    chosen = _pick_model(checkpoint, sections, name)
    section = {key: value for key, value in sections[chosen].items() if key != "dtype"}
    if "name" not in section and not section.get("source"):
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: model '{chosen}' has no name and no source")
    return chosen, section


def _typed_config(checkpoint: Path, chosen: str, section: dict[str, Any], registries) -> tuple[Component, Any]:
    options = {key: value for key, value in section.items() if key not in ("name", "frozen", "source")}
    component = registries["models"].get(str(section["name"]))
    try:
        config = build_config(component.config_class, options, chosen) if component.config_class else None
    except RecipeError as error:
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: {error.message}") from error
    return component, config


def model_config(path: str | Path, registries=None, name: str | None = None) -> ModelConfig:
    """The component and typed config of the model a run or checkpoint names, reading no weights.

    What a plugin needs to build its own model on a run's shape (a new head on a pretrained
    tower, a dry run on the meta device). `name` picks a model as in `load_model`; a model the
    recipe takes whole from a `source:` run is described by that run.
    """
    from toolkit.plugins import get_registries  # loading plugins is slow: only when asked

    checkpoint = resolve_checkpoint(path)
    registries = registries or get_registries()
    chosen, section = _chosen_section(checkpoint, read_recipe(checkpoint), name)
    if "name" not in section:
        return model_config(section["source"], registries)
    component, config = _typed_config(checkpoint, chosen, section, registries)
    return ModelConfig(chosen, component, config, checkpoint)


def load_model(path: str | Path, registries=None, device: str | torch.device = "cpu",
               name: str | None = None) -> LoadedModel:
    """Build the model a checkpoint's recipe names and load its weights.

    `name` picks one model of a many-model run (default: the one trained model). A frozen model
    has no weights in the checkpoint: it is loaded from the `source:` its recipe records.
    """
    from toolkit.plugins import get_registries  # loading plugins is slow: only when a model is built

    checkpoint = resolve_checkpoint(path)
    recipe = read_recipe(checkpoint)
    registries = registries or get_registries()
    chosen, section = _chosen_section(checkpoint, recipe, name)
    source, frozen = section.pop("source", ""), section.pop("frozen", False)
    if "name" not in section:
        model = load_model(source, registries, device).model
    else:
        component, config = _typed_config(checkpoint, chosen, section, registries)
        with torch.device(device):
            model = component.factory(config)
        if frozen and source:
            load_weights_into(model, source)
    if not frozen:
        weights, state = trained_weights(checkpoint, recipe, chosen)
        load_state_strict(model, state, weights)
    model.eval()
    return LoadedModel(model=model, recipe=recipe, checkpoint_dir=checkpoint, run_dir=checkpoint.parent)


def load_weights_into(model: nn.Module, source: str | Path, name: str | None = None) -> Path:
    """Load the weights of a run's (trained) model into `model`, strictly; returns the file read.

    A model with fresh state keys (toolkit.capabilities.FreshState) keeps those as they are.
    """
    from toolkit.capabilities import FreshState

    checkpoint = resolve_checkpoint(source)
    recipe = read_recipe(checkpoint)
    weights, state = trained_weights(checkpoint, recipe, _pick_model(checkpoint, model_sections(recipe), name))
    fresh = frozenset(model.fresh_state_keys()) if isinstance(model, FreshState) else frozenset()
    state = {key: value for key, value in state.items() if key not in fresh}
    load_state_strict(model, state, weights, keep=fresh)
    return weights


def trained_weights(checkpoint: Path, recipe: dict[str, Any], chosen: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """The file holding one trained model's weights, and the weights, from a full checkpoint or,
    read whole in this process, from a sharded one (`trainer.checkpoint_format: sharded`)."""
    weights = checkpoint / weights_file(chosen)
    if weights.is_file() or not is_sharded_checkpoint(checkpoint):
        return weights, load_weights(weights)
    from toolkit.engine.sharded import read_model_weights  # the DCP reader is slow to import

    trained = [key for key, section in model_sections(recipe).items() if not section.get("frozen", False)]
    return checkpoint / "sharded", read_model_weights(checkpoint, chosen, len(trained))


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: Path, assign: bool = False,
                      keep: frozenset[str] = frozenset()) -> None:
    """`model.load_state_dict(state)` with shape and key mismatches reported as one line.

    `assign=True` makes the model hold `state`'s tensors themselves (for a model built on meta);
    the keys in `keep` are neither expected in `state` nor loaded.
    """
    expected = {key: value for key, value in model.state_dict().items() if key not in keep}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the model: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, tensor in expected.items():
        if tuple(tensor.shape) != tuple(state[key].shape):
            raise CheckpointError(
                f"{source}: '{key}' has shape {tuple(state[key].shape)} but the model expects {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, assign=assign, strict=not keep)
