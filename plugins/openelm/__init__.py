"""The OpenELM plugin: the OpenELM model family (generic, CPU-sized, and the four published sizes).

Registers models `openelm` (generic; small defaults), `openelm-tiny`, `openelm-270M`,
`openelm-450M`, `openelm-1_1B`, `openelm-3B`, the model importer `openelm-hf` (Hugging Face OpenELM
directories, for `--model` in `toolkit-generate` and `toolkit-eval`), and its recipes (`recipes/`
in this package, shipped as package data) under the namespace `openelm`, so that
`toolkit-train openelm/tiny.yaml` finds them.
"""

from __future__ import annotations

from pathlib import Path

from plugins.openelm.config import (
    PRESETS,
    LayerWidths,
    OpenELMConfig,
    make_divisible,
)
from plugins.openelm.importer import HFOpenELMImporter
from plugins.openelm.model import OpenELM
from toolkit import hookimpl

__all__ = ["PRESETS", "LayerWidths", "OpenELM", "OpenELMConfig", "build_openelm", "make_divisible"]

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")


def build_openelm(config: OpenELMConfig) -> OpenELM:
    """The model factory: builds on the current default device (meta for dry runs)."""
    return OpenELM(config)


@hookimpl
def register_models(register):
    for name, config_class in PRESETS.items():
        register(name, build_openelm, config=config_class)


@hookimpl
def register_model_importers(register):
    register("openelm-hf", HFOpenELMImporter())


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="openelm")
