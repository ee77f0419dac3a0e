"""The CatLIP plugin: image-text pretraining as multi-label classification over WordNet synsets.

Registers the models `catlip-vit-tiny`, `catlip-vit-b16`, `catlip-vit-l16`, `catlip-vit-h14`, the
loss `catlip_bce`, the task `multilabel_classification` and the dataset `image_text_shards`
(webdataset image-caption shards with synset labels mined from the captions; `builtin:openmoji` is
the embedded default), and its recipes under `catlip/` (`catlip/tiny.yaml`, `catlip/vit_b16.yaml`, ...:
this package's `recipes/`). `toolkit-catlip-vocab` builds a synset vocabulary from shards.
"""

from __future__ import annotations

from pathlib import Path

from plugins.catlip.dataset import ImageTextShardsConfig, build_image_text_shards
from plugins.catlip.loss import CatLIPBCEConfig, CatLIPBCELoss, build_catlip_bce
from plugins.catlip.models import PRESETS, CatLIPViT, CatLIPViTConfig, build_catlip_vit
from plugins.catlip.task import (
    MultiLabelClassificationConfig,
    MultiLabelClassificationTask,
    build_multilabel_classification,
)
from toolkit import hookimpl

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data

__all__ = [
    "PRESETS",
    "CatLIPViT",
    "CatLIPViTConfig",
    "build_catlip_vit",
    "CatLIPBCEConfig",
    "CatLIPBCELoss",
    "MultiLabelClassificationConfig",
    "MultiLabelClassificationTask",
    "build_catlip_bce",
    "build_multilabel_classification",
    "ImageTextShardsConfig",
    "build_image_text_shards",
]


@hookimpl
def register_datasets(register):
    register("image_text_shards", build_image_text_shards, config=ImageTextShardsConfig)


@hookimpl
def register_losses(register):
    register("catlip_bce", build_catlip_bce, config=CatLIPBCEConfig)


@hookimpl
def register_tasks(register):
    register("multilabel_classification", build_multilabel_classification, config=MultiLabelClassificationConfig)


@hookimpl
def register_models(register):
    for name, config_class in PRESETS.items():
        register(name, build_catlip_vit, config=config_class)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="catlip")
