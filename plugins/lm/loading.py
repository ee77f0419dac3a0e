"""Loading a language model for inference from whatever `--model` names.

In order: a toolkit run or checkpoint directory (the toolkit model, its run's tokenizer); a path a
plugin's model importer recognises (`register_model_importers`: the toolkit's own implementation
of a published family, so the KV-cache path serves it); a GGUF file or any other local Hugging Face
causal-LM directory (through transformers, see `plugins.lm.hf_model`). `toolkit-generate` and the
`lm_eval` evaluators load through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from plugins.lm.hf_model import HFLanguageModel, is_gguf, load_hf_language_model
from plugins.lm.language_model import LanguageModel
from plugins.lm.tokenizer import Tokenizer, load_tokenizer
from plugins.lm.tokenizer_files import RUN_TOKENIZER_FILES, run_tokenizer_file, trained_tokenizer_file
from toolkit.errors import CheckpointError, DataError
from toolkit.importers import importer_for
from toolkit.registry import Component

TOKENIZER_FILE = "tokenizer.model"
ACCEPTED_MODELS = ("--model takes a toolkit run or checkpoint directory, a Hugging Face model directory "
                   "(config.json + weights + tokenizer files, or --tokenizer for kinds that ship none) "
                   "or a .gguf file")


def find_tokenizer(run_dir: Path, recipe: dict[str, Any]) -> Tokenizer:
    """The run's copied tokenizer, else the file the recipe's data section names."""
    found = trained_tokenizer_file([run_dir], recipe)
    if found is not None:
        return load_tokenizer(found)
    raise DataError(f"{run_dir}: no {' or '.join(RUN_TOKENIZER_FILES)} in the run directory and the recipe names "
                    "no tokenizer file",
                    hint="copy the tokenizer the run was trained with to " + str(run_dir / TOKENIZER_FILE))


def _is_toolkit_directory(path: Path) -> bool:
    """A run directory (recipe.yaml, step-NNNNNN/) or one checkpoint (trainer_state.json).

    Not model.safetensors alone: Hugging Face directories have one too."""
    markers = ("recipe.yaml", "trainer_state.json")
    return any((path / marker).is_file() for marker in markers) or any(path.glob("step-*"))


def _load_toolkit_run(path: Path, device: str, tokenizer: str | None, model_name: str | None) -> LanguageModel:
    from toolkit.checkpoint import load_model

    loaded = load_model(str(path), device=device, name=model_name)
    found = load_tokenizer(tokenizer) if tokenizer else find_tokenizer(loaded.run_dir, loaded.recipe)
    model_device = next(iter(loaded.model.parameters()), torch.empty(0)).device
    # Two models of one checkpoint (an RL run's policy and value) must never share cached samples.
    identity = str(loaded.checkpoint_dir.resolve()) + (f"#{model_name}" if model_name else "")
    return LanguageModel(loaded.model, found, model_device, identity=identity)


def _load_imported(path: Path, importer: Component, device: str, tokenizer: str | None) -> LanguageModel:
    """A path a plugin's importer reads, with --tokenizer or a tokenizer.model (else a tokenizer.json)
    beside the weights.

    The tokenizer is checked first, so a missing one is reported before any weights are read."""
    beside = run_tokenizer_file(path if path.is_dir() else path.parent) or path / TOKENIZER_FILE
    if not tokenizer and not beside.is_file():
        raise CheckpointError(
            f"{path}: read as {importer.factory.description} (importer '{importer.name}' of plugin "
            f"'{importer.plugin}') with no {' or '.join(RUN_TOKENIZER_FILES)} beside the weights",
            hint="pass --tokenizer with the tokenizer the model was trained with (a toolkit run's "
                 "tokenizer.model or tokenizer.json, LLaMA's for Apple's OpenELM); toolkit-export copies a "
                 "run's into the export")
    model = importer.factory.load(path)
    model.eval().to(device)
    return LanguageModel(model, load_tokenizer(tokenizer or beside), torch.device(device),
                         identity=str(path.resolve()))


def _check_config_json(config_path: Path) -> None:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({error})".splitlines()[0]) from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: not a readable JSON config (it holds a {type(config).__name__}, "
                              "not an object)")


def load_language_model(spec: str, device: str, tokenizer: str | None = None,
                        model_name: str | None = None) -> LanguageModel | HFLanguageModel:
    """Whatever `--model` names (see the module docstring), on `device`. `tokenizer` overrides the
    model's own tokenizer file (toolkit runs, imported models); `model_name` picks one model of a
    toolkit run that holds several (an RL run's `policy`)."""
    path = Path(spec)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory, model directory or GGUF file",
                              hint=ACCEPTED_MODELS)
    if path.is_dir() and _is_toolkit_directory(path):
        return _load_toolkit_run(path, device, tokenizer, model_name)
    if model_name:
        raise CheckpointError(f"{path}: --model-name picks one model of a toolkit run, and this is not one")
    config_path = path / "config.json"
    if config_path.is_file():  # before the importers, which read it too: one clear message if it is broken
        _check_config_json(config_path)
    importer = importer_for(path)
    if importer is not None:
        return _load_imported(path, importer, device, tokenizer)
    if path.is_file():
        if is_gguf(path):
            return load_hf_language_model(path, device)
        raise CheckpointError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)",
                              hint=ACCEPTED_MODELS)
    if config_path.is_file():
        return load_hf_language_model(path, device)
    raise CheckpointError(f"{path}: not a checkpoint: neither a toolkit run or checkpoint directory, a "
                          "Hugging Face model directory (config.json) nor a GGUF file", hint=ACCEPTED_MODELS)


def run_sequences(recipe: dict, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` (input_ids, labels) rows [N, S] of a run's own data (its recipe's data section).

    `split` is "train" or "val"; for analyses that read a trained model on the data it saw.
    """
    from toolkit.config import build_config
    from toolkit.data import ShardInfo
    from toolkit.plugins import get_registries

    section = dict(recipe["data"])
    component = get_registries()["datasets"].get(section.pop("name"))
    config = build_config(component.config_class, section, "data")
    source = component.factory(config, split, ShardInfo(0, 1, int(recipe.get("trainer", {}).get("seed", 0)), 1))
    inputs, labels = [], []
    for batch in source:
        inputs.append(batch["input_ids"])
        labels.append(batch["labels"])
        if sum(len(rows) for rows in inputs) >= count:
            break
    if not inputs:
        raise DataError(f"the run's data section gives no {split} sequences")
    return torch.cat(inputs)[:count], torch.cat(labels)[:count]
