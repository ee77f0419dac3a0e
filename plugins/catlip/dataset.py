"""The `image_text_shards` dataset: image-text shards -> decoded, augmented images + synset labels.

Building it (every rank does, safely): resolve the shards (a pattern or `builtin:openmoji`), index
each shard once (cached; images that do not decode are skipped, counted and named in the log),
load or build the synset vocabulary, and mine each shard's labels once (cached). Batches are
{"images": float32 [B, 3, H, W] normalised, "labels": float32 [B, C] multi-hot (with
labels: synsets), "captions": list[str]}.

Training order is `toolkit.data.order.EpochOrder` over all samples; the augmentation of each
image (random resized crop, horizontal flip, from torchvision.transforms.v2) draws from a
generator seeded by the image's place in the epoch's order (`EpochOrder.next_items`), so a resumed
run sees the same pixels, and so does a run at another world size or grad_accum.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from plugins.catlip.labels import cached_labels, cached_vocabulary, load_vocabulary
from plugins.catlip.openmoji import resolve_builtin_images
from plugins.catlip.shards import ImageReader, ShardIndex, load_index
from toolkit.data import ShardInfo
from toolkit.data.cache import cache_root
from toolkit.data.order import (
    OrderedTrainSource,
    OrderedValidationSource,
    ValidationOrder,
    seeded_torch_rng,
    training_order,
)
from toolkit.data.shards import DEFAULT_MAX_MEMBER_BYTES, expand_shard_pattern
from toolkit.errors import DataError

logger = logging.getLogger(__name__)
VOCABULARY_FILE = "synsets.json"
# CLIP's image normalisation (OpenAI), the usual choice for image-text pretraining.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageTextShardsConfig:
    """The `data:` section for `name: image_text_shards`."""

    train_shards: str = "builtin:openmoji"  # glob/brace pattern of .tar shards ("::" joins several), or builtin:openmoji
    val_shards: str = ""  # "" with the builtin -> its validation shards; "" otherwise -> no validation
    vocabulary: str = ""  # synset vocabulary JSON; "" -> built from the training captions (cached)
    min_count: int = 1  # building the vocabulary: keep synsets seen in at least this many captions
    top_k: int = 0  # building the vocabulary: keep the K most frequent (0 = all); must equal model.num_classes
    labels: str = "synsets"  # "synsets" (CatLIP multi-hot targets) or "none" (captions only, e.g. CLIP)
    image_size: int = 64
    batch_size: int = 64  # per rank
    crop_scale_min: float = 0.5  # RandomResizedCrop area range (training only)
    crop_scale_max: float = 1.0
    flip: bool = True  # random horizontal flip (training only)
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES  # a larger shard member (image, caption) is an error
    cache_dir: str = ""  # "" -> $TOOLKIT_CACHE or ~/.cache/toolkit

    def __post_init__(self) -> None:
        if self.labels not in ("synsets", "none"):
            raise ValueError(f"labels must be 'synsets' or 'none', got '{self.labels}'")
        for name in ("image_size", "batch_size", "min_count", "max_member_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.crop_scale_min <= self.crop_scale_max <= 1:
            raise ValueError("need 0 < crop_scale_min <= crop_scale_max <= 1")


class _ImageTextSource:
    """Samples of indexed shards with their labels; what the train and val sources share."""

    def __init__(self, indexes: list[ShardIndex], labels: list[list[list[int]]] | None, num_classes: int,
                 vocabulary_path: Path | None, config: ImageTextShardsConfig, shard: ShardInfo) -> None:
        if not 0 <= shard.rank < shard.world_size or shard.grad_accum < 1:
            raise DataError(f"invalid shard info {shard}: need 0 <= rank < world_size and grad_accum >= 1")
        self.indexes = indexes
        self.labels = labels
        self.num_classes = num_classes
        self.vocabulary_path = vocabulary_path
        self.config = config
        self.shard = shard
        self.reader = ImageReader(indexes)
        counts = [len(index) for index in indexes]
        self.sample_shard = np.repeat(np.arange(len(indexes)), counts)  # [N] shard of each sample
        self.sample_position = np.concatenate([np.arange(n) for n in counts]) if counts else np.empty(0, int)
        self.num_samples = int(sum(counts))
        self.unreadable = sum(len(index.unreadable) for index in indexes)
        self.empty_labels = sum(1 for shard_labels in labels or [] for row in shard_labels if not row)
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def run_files(self) -> dict[str, Path]:
        """The engine copies the vocabulary into the run directory (transfer and export need it)."""
        return {VOCABULARY_FILE: self.vocabulary_path} if self.vocabulary_path else {}

    def _batch(self, indices: np.ndarray, rows: int, transform, seeds: list[int] | None = None) -> dict[str, Any]:
        size = self.config.image_size
        images = torch.zeros(rows, 3, size, size)  # [rows, 3, H, W]; rows past `indices` stay padding
        captions: list[str] = []
        targets = torch.zeros(rows, self.num_classes) if self.labels is not None else None  # [rows, C]
        for row, sample in enumerate(indices):
            shard, position = int(self.sample_shard[sample]), int(self.sample_position[sample])
            pixels = v2.functional.pil_to_tensor(self.reader.read(shard, position))  # [3, h, w] uint8
            # Each image's draws come from its own seed (none for the deterministic validation resize).
            with seeded_torch_rng(seeds[row]) if seeds is not None else contextlib.nullcontext():
                images[row] = transform(pixels).float().div_(255)
            captions.append(self.indexes[shard].captions[position])
            if targets is not None:
                targets[row, self.labels[shard][position]] = 1.0
        batch: dict[str, Any] = {"images": images.sub_(self.mean).div_(self.std), "captions": captions}
        if targets is not None:
            batch["labels"] = targets
        return batch


class ImageTextTrainSource(OrderedTrainSource, _ImageTextSource):
    """Augmented training batches forever; resumable to the exact micro-batch and pixel."""

    def __init__(self, *arguments, **keywords) -> None:
        super().__init__(*arguments, **keywords)
        config = self.config
        self.order = training_order(self.num_samples, config.batch_size, self.shard, "image_text_shards",
                                    hint="use more data, or lower data.batch_size")
        self.augment = v2.Compose([
            v2.RandomResizedCrop(config.image_size, scale=(config.crop_scale_min, config.crop_scale_max), antialias=True),
            *([v2.RandomHorizontalFlip()] if config.flip else []),
        ])

    def next_batch(self) -> dict[str, Any]:
        indices, seeds = self.order.next_items()
        return self._batch(indices, len(indices), self.augment, seeds)


class ImageTextValSource(OrderedValidationSource, _ImageTextSource):
    """One pass in stored order, resized (no augmentation), split across ranks in equal batch counts.

    Rows past the last sample are padding with all-zero images and labels; the task counts only
    `len(captions)` items, so they add nothing.
    """

    def __init__(self, *arguments, **keywords) -> None:
        super().__init__(*arguments, **keywords)
        self.order = ValidationOrder(self.num_samples, self.config.batch_size, self.shard)
        self.resize = v2.Compose([v2.Resize(self.config.image_size, antialias=True), v2.CenterCrop(self.config.image_size)])

    def validation_batch(self, indices: np.ndarray) -> dict[str, Any]:
        return self._batch(indices, self.config.batch_size, self.resize)


def _patterns(config: ImageTextShardsConfig, cache_dir: Path) -> tuple[str, str]:
    train, val = config.train_shards, config.val_shards
    if train.startswith("builtin:"):
        built = resolve_builtin_images(train, cache_dir)
        train, val = built.train_pattern, val or built.val_pattern
    if val.startswith("builtin:"):
        val = resolve_builtin_images(val, cache_dir).val_pattern
    return train, val


def _indexes(pattern: str, cache_dir: Path, max_member_bytes: int) -> list[ShardIndex]:
    return [load_index(path, cache_dir, max_member_bytes) for path in expand_shard_pattern(pattern)]


def resolve_vocabulary(config: ImageTextShardsConfig, train_indexes: list[ShardIndex], cache_dir: Path) -> Path:
    if config.vocabulary:
        return Path(config.vocabulary)
    return cached_vocabulary(train_indexes, config.min_count, config.top_k or None, cache_dir)


def build_image_text_shards(config: ImageTextShardsConfig, split: str, shard: ShardInfo) -> _ImageTextSource | None:
    """The dataset factory. Returns None for "val" when there are no validation shards."""
    if split not in ("train", "val"):
        raise DataError(f"image_text_shards has splits 'train' and 'val', not '{split}'")
    cache_dir = cache_root(config.cache_dir)
    train_pattern, val_pattern = _patterns(config, cache_dir)
    if split == "val" and not val_pattern:
        return None
    train_indexes = _indexes(train_pattern, cache_dir, config.max_member_bytes)
    indexes = train_indexes if split == "train" else _indexes(val_pattern, cache_dir, config.max_member_bytes)
    labels, num_classes, vocabulary_path = None, 0, None
    if config.labels == "synsets":
        vocabulary_path = resolve_vocabulary(config, train_indexes, cache_dir)
        vocabulary = load_vocabulary(vocabulary_path)
        if config.top_k and len(vocabulary) != config.top_k:
            raise DataError(f"{vocabulary_path}: the synset vocabulary has {len(vocabulary)} classes, "
                            f"data.top_k asks for {config.top_k}",
                            hint=f"set data.top_k (and model.num_classes) to {len(vocabulary)} or lower")
        labels = [cached_labels(index, vocabulary, vocabulary_path, cache_dir) for index in indexes]
        num_classes = len(vocabulary)
    source_class = ImageTextTrainSource if split == "train" else ImageTextValSource
    source = source_class(indexes, labels, num_classes, vocabulary_path, config, shard)
    if source.empty_labels:
        logger.info("%s split: %d of %d captions have no synset in the vocabulary (all-zero labels)",
                    split, source.empty_labels, source.num_samples)
    return source
