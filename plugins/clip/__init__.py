"""The CLIP baseline: contrastive image-text pretraining on the same engine, data and image tower as CatLIP.

Registers the models `clip-vit-tiny` and `clip-vit-b16` (CatLIP's ViT as the image tower, open_clip's
text transformer), the task `contrastive` and the loss `clip` (open_clip's ClipLoss, with its
cross-rank gather under torchrun). It trains on `image_text_shards` with `labels: none`. Its recipe
`clip/tiny.yaml` (this package's `recipes/`) builds on `catlip/tiny.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from plugins.clip.model import PRESETS, CLIPConfig, CLIPModel, build_clip
from plugins.clip.task import (
    ClipLossConfig,
    ClipLossFunction,
    ContrastiveConfig,
    ContrastiveTask,
    build_clip_loss,
    build_contrastive,
)
from toolkit import hookimpl

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data

__all__ = ["PRESETS", "CLIPConfig", "CLIPModel", "ClipLossConfig", "ClipLossFunction", "ContrastiveConfig",
           "ContrastiveTask", "build_clip", "build_clip_loss", "build_contrastive"]


@hookimpl
def register_models(register):
    for name, config_class in PRESETS.items():
        register(name, build_clip, config=config_class)


@hookimpl
def register_tasks(register):
    register("contrastive", build_contrastive, config=ContrastiveConfig)


@hookimpl
def register_losses(register):
    register("clip", build_clip_loss, config=ClipLossConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="clip")
