"""The transfer plugin: fine-tuning and linear probes of CatLIP towers, with CatLIP's Transfer Init.

Registers the model `transfer-vit` (a CatLIP ViT from a pretraining run with a new head over
downstream classes, optionally initialised from the matching synsets' pretrained rows), the task
`classification` (cross-entropy, accuracy) and the dataset `fashion_mnist` (Debian's
`dataset-fashion-mnist` idx files); and the evaluator `linear_probe` (`toolkit-eval linear_probe
--model RUN`: a converged logistic-regression probe of a tower's frozen features, and Transfer
Init's zero-shot accuracy); and its recipe `transfer/fashion_mnist.yaml` (this package's `recipes/`).
"""

from __future__ import annotations

from pathlib import Path

from plugins.transfer.fashion_mnist import (
    CLASS_NAMES,
    FashionMNISTConfig,
    build_fashion_mnist,
)
from plugins.transfer.model import TransferViT, TransferViTConfig, build_transfer_vit
from plugins.transfer.probe import LinearProbeConfig, build_linear_probe
from plugins.transfer.task import (
    ClassificationConfig,
    ClassificationTask,
    build_classification,
)
from toolkit import hookimpl

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data

__all__ = [
    "CLASS_NAMES",
    "ClassificationConfig",
    "ClassificationTask",
    "FashionMNISTConfig",
    "TransferViT",
    "TransferViTConfig",
    "build_classification",
    "build_fashion_mnist",
    "build_transfer_vit",
]


@hookimpl
def register_models(register):
    register("transfer-vit", build_transfer_vit, config=TransferViTConfig)


@hookimpl
def register_tasks(register):
    register("classification", build_classification, config=ClassificationConfig)


@hookimpl
def register_datasets(register):
    register("fashion_mnist", build_fashion_mnist, config=FashionMNISTConfig)


@hookimpl
def register_evaluators(register):
    register("linear_probe", build_linear_probe, config=LinearProbeConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="transfer")
