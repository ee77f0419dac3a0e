"""Model soups: the weighted average of runs of one architecture, written as an ordinary run.

A soup reads each run's trained model (the checkpoint's one trained model, or the one `--model`
names in a many-model run such as an RL run's `policy`; a run directory's latest checkpoint), checks that every run has the same tensors with the same
shapes and dtypes, the same model config and the same tokenizer, and averages the weights with the
given weights (non-negative, summing to 1) in float64 before casting back, so a soup of identical
checkpoints is that checkpoint bit for bit. Tied tensors stay tied.

The result is a run directory like a training run's (`recipe.yaml`, `step-000000/` with
`model.safetensors`, `recipe.yaml` and `trainer_state.json`, `tokenizer.model`) plus `soup.json`
naming its ingredients, so `toolkit-generate`, `toolkit-eval` and a recipe's `source:` load it.
It is built in a temporary folder beside the target and renamed into place: a failed soup writes
nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from plugins.lm.tokenizer_files import run_tokenizer_file, tokenizer_run_files
from toolkit.checkpoint import (
    ModelConfig,
    checkpoint_name,
    model_config,
    model_sections,
    read_recipe,
    resolve_checkpoint,
    save_weights,
    trained_weights,
)
from toolkit.errors import CheckpointError, ToolkitError
from toolkit.files import atomic_directory

TOKENIZER_FILE = "tokenizer.model"
SOUP_FILE = "soup.json"


class SoupError(ToolkitError):
    """Runs that cannot be averaged, or weights that are not a mixture."""


@dataclass
class Ingredient:
    """One run of a soup: where it is, its trained model's config and its weights."""

    given: str  # the path as the user gave it, for messages
    checkpoint: Path
    recipe: dict[str, Any]
    weights: dict[str, torch.Tensor]
    name: str  # the model's name in the run's recipe ("model", "policy", ...)

    @functools.cached_property
    def model(self) -> ModelConfig:
        """The trained model's registered component and config (loads the plugins: asked for only
        once the tensors agree, so a mismatch is reported without that cost)."""
        return model_config(self.checkpoint, name=self.name)

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent

    def tokenizer_digest(self) -> str | None:
        path = run_tokenizer_file(self.run_dir)  # tokenizer.model, or a Hugging Face tokenizer.json
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None


def trained_model_name(checkpoint: Path, recipe: dict[str, Any], name: str | None = None) -> str:
    """The run's one trained model, or `name` (which must be a trained model of the run)."""
    trained = [key for key, section in model_sections(recipe).items() if not section.get("frozen", False)]
    if name is not None:
        if name not in trained:
            raise SoupError(f"{checkpoint}: has no trained model '{name}'", hint=f"its trained models: {', '.join(trained)}")
        return name
    if len(trained) != 1:
        raise SoupError(f"{checkpoint}: its recipe names {len(trained)} trained models ({', '.join(trained)}); "
                        "say which with --model")
    return trained[0]


def read_ingredient(path: str | Path, name: str | None = None) -> Ingredient:
    """A run's trained model (`name` picks one of a many-model run, e.g. an RL run's policy)."""
    checkpoint = resolve_checkpoint(path)
    recipe = read_recipe(checkpoint)
    chosen = trained_model_name(checkpoint, recipe, name)
    _, state = trained_weights(checkpoint, recipe, chosen)  # a full or a sharded checkpoint
    return Ingredient(str(path), checkpoint, recipe, state, chosen)


def check_mixture(weights: list[float], count: int) -> list[float]:
    """`weights` checked: one per run, finite, non-negative, summing to 1 (to 1e-6)."""
    if len(weights) != count:
        raise SoupError(f"--weights gives {len(weights)} weights for {count} runs")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise SoupError(f"--weights must be finite and non-negative, got {','.join(map(str, weights))}")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise SoupError(f"--weights must sum to 1, got {','.join(map(str, weights))} (sum {sum(weights):.6g})")
    return weights


def check_compatible(first: Ingredient, other: Ingredient) -> None:
    """One line naming the first difference: a tensor (name and both shapes), the config, the tokenizer."""
    for key, tensor in first.weights.items():
        if key not in other.weights:
            raise SoupError(f"{other.given} has no tensor '{key}', which {first.given} has: not the same architecture")
        theirs = other.weights[key]
        if tuple(theirs.shape) != tuple(tensor.shape) or theirs.dtype != tensor.dtype:
            raise SoupError(f"tensor '{key}' is {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} in "
                            f"{first.given} but {tuple(theirs.shape)} {str(theirs.dtype).removeprefix('torch.')} in "
                            f"{other.given}: not the same architecture")
    extra = sorted(set(other.weights) - set(first.weights))
    if extra:
        raise SoupError(f"{other.given} has tensor '{extra[0]}', which {first.given} has not: not the same architecture")
    if first.model.component.name != other.model.component.name or first.model.config != other.model.config:
        mine = dataclasses.asdict(first.model.config) if first.model.config is not None else {}
        theirs = dataclasses.asdict(other.model.config) if other.model.config is not None else {}
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)) or ["name"]
        raise SoupError(f"{other.given}: its model config differs from {first.given}'s in {', '.join(changed)}")
    if first.tokenizer_digest() != other.tokenizer_digest():
        raise SoupError(f"{other.given}: its {TOKENIZER_FILE} differs from {first.given}'s (or one has none): "
                        "a soup needs one vocabulary")


def average(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """sum_i w_i * state_i per tensor, accumulated in float64, cast to each tensor's dtype.

    Keys that share one tensor in the first state (tied weights) share the result too."""
    result: dict[str, torch.Tensor] = {}
    done: dict[int, torch.Tensor] = {}
    for key, tensor in states[0].items():
        if id(tensor) in done:
            result[key] = done[id(tensor)]
            continue
        if not tensor.is_floating_point():  # integer buffers (counters) cannot be averaged: keep the first
            mixed = tensor.clone()
        else:
            total = torch.zeros(tensor.shape, dtype=torch.float64)
            for state, weight in zip(states, weights):
                total.add_(state[key].to(torch.float64), alpha=weight)
            mixed = total.to(tensor.dtype)
        result[key] = done[id(tensor)] = mixed
    return result


def soup_state(ingredients: list[Ingredient], weights: list[float]) -> dict[str, torch.Tensor]:
    if len(ingredients) < 1:
        raise SoupError("a soup needs at least one run")
    check_mixture(weights, len(ingredients))
    for other in ingredients[1:]:
        check_compatible(ingredients[0], other)
    return average([ingredient.weights for ingredient in ingredients], weights)


def soup_recipe(first: Ingredient) -> dict[str, Any]:
    """The first run's recipe with its model as one plain `model:` section (registered name and
    full config), so loading the soup needs none of the ingredients."""
    recipe = {key: value for key, value in first.recipe.items() if key not in ("model", "models")}
    config = dataclasses.asdict(first.model.config) if first.model.config is not None else {}
    return {"model": {"name": first.model.component.name, **config}, **recipe}


def write_soup(ingredients: list[Ingredient], weights: list[float], out: Path) -> Path:
    """Average `ingredients` and write the soup run to `out` (which must not exist); returns its checkpoint."""
    out = Path(out)
    if out.exists():
        raise SoupError(f"{out}: already exists", hint="choose a new --out directory")
    if not out.parent.is_dir():
        raise SoupError(f"{out.parent}: no such directory for --out")
    state = soup_state(ingredients, weights)
    recipe_text = yaml.safe_dump(soup_recipe(ingredients[0]), sort_keys=False)
    record = {"ingredients": [{"run": str(i.checkpoint.resolve()), "weight": w} for i, w in zip(ingredients, weights)]}
    # atomic_directory: the soup appears whole (fsynced, the umask's permissions) or not at all.
    with atomic_directory(out) as temporary:
        checkpoint = temporary / checkpoint_name(0)
        checkpoint.mkdir()
        save_weights(state, checkpoint / "model.safetensors")
        (checkpoint / "recipe.yaml").write_text(recipe_text)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 0, "soup": record}))
        (temporary / "recipe.yaml").write_text(recipe_text)
        (temporary / SOUP_FILE).write_text(json.dumps(record, indent=2) + "\n")
        tokenizer = run_tokenizer_file(ingredients[0].run_dir)
        if tokenizer is not None:
            for name, source in tokenizer_run_files(tokenizer).items():
                shutil.copyfile(source, temporary / name)
    return out / checkpoint_name(0)


def make_soup(runs: list[str], weights: list[float] | None, out: Path, name: str | None = None) -> Path:
    """`toolkit-soup`'s work: read the runs, check them, write the soup run directory."""
    weights = weights if weights is not None else [1.0 / len(runs)] * len(runs)
    check_mixture(weights, len(runs))
    try:
        ingredients = [read_ingredient(run, name) for run in runs]
    except CheckpointError as error:
        raise SoupError(error.message, hint=error.hint) from error
    return write_soup(ingredients, weights, out)
