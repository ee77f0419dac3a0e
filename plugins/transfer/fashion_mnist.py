"""The `fashion_mnist` dataset: Debian's Fashion-MNIST idx files -> normalised 3-channel image batches.

The files are `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (Debian `dataset-fashion-mnist`),
parsed here with numpy. Images are 28x28 gray; a batch is resized to `image_size` (to match a
pretrained tower), repeated to 3 channels and normalised like the CatLIP pretraining images.
Batches are {"images": float32 [B, 3, H, W], "targets": int64 [B]}.

Training order is `toolkit.data.order.EpochOrder` over the first `train_limit` training images
(the file is already shuffled, so a prefix is a fair few-shot subset); the optional augmentation
of each image draws from a generator seeded by the image's place in the epoch's order
(`EpochOrder.next_items`), so a resumed run, and a run at another world size or grad_accum, sees
the same pixels. Validation is one pass over the first `val_limit` test images, split across ranks in equal
batch counts; padding rows have target -100 (ignored by the loss and the accuracy).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from plugins.catlip.dataset import MEAN, STD
from toolkit.data import ShardInfo
from toolkit.data.order import (
    OrderedTrainSource,
    OrderedValidationSource,
    ValidationOrder,
    seeded_torch_rng,
    training_order,
)
from toolkit.errors import DataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install dataset-fashion-mnist, or set data.root to a folder holding the four idx .gz files"
CLASS_NAMES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
PADDING_TARGET = -100  # cross_entropy's default ignore_index
_IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one Fashion-MNIST uses


@dataclass
class FashionMNISTConfig:
    """The `data:` section for `name: fashion_mnist`."""

    root: str = DEFAULT_ROOT  # folder holding the four idx .gz files
    image_size: int = 64  # must equal the model's image size
    batch_size: int = 64  # per rank
    train_limit: int = 0  # use the first N training images (0 = all 60,000)
    val_limit: int = 0  # evaluate on the first N test images (0 = all 10,000)
    augment: bool = False  # random resized crop (+ flip) on training batches
    crop_scale_min: float = 0.6
    flip: bool = True  # with augment: random horizontal flip

    def __post_init__(self) -> None:
        for name in ("image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_limit < 0 or self.val_limit < 0:
            raise ValueError("train_limit and val_limit must be >= 0")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError("need 0 < crop_scale_min <= 1")


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """An idx file (gzip) as a uint8 array of `expected_dims` dimensions; DataError if it is not one."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataError(f"{path}: Fashion-MNIST file not found", hint=INSTALL_HINT) from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})", hint=INSTALL_HINT) from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (bad magic number)", hint=INSTALL_HINT)
    type_code, dims = raw[2], raw[3]
    if type_code != _IDX_UBYTE or dims != expected_dims:
        raise DataError(f"{path}: idx file of type 0x{type_code:02x} with {dims} dimensions, expected unsigned "
                        f"bytes with {expected_dims}", hint=INSTALL_HINT)
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: idx header truncated", hint=INSTALL_HINT)
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    if len(raw) - header != math.prod(shape):
        raise DataError(f"{path}: idx data holds {len(raw) - header} bytes but its header promises "
                        f"{math.prod(shape)} for shape {shape}", hint=INSTALL_HINT)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_split(root: str, split: str, modified: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = FILES[split]
    images = read_idx(Path(root) / images_name, 3)  # [N, 28, 28] uint8
    labels = read_idx(Path(root) / labels_name, 1)  # [N] uint8
    if len(images) != len(labels):
        raise DataError(f"{Path(root) / labels_name}: {len(labels)} labels for {len(images)} images in "
                        f"{images_name}", hint=INSTALL_HINT)
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise DataError(f"{Path(root) / labels_name}: label {int(labels.max())} is not a Fashion-MNIST class (0-9)")
    return images, labels


def load_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N] uint8) of "train" or "val" (the t10k files); cached per process."""
    stamps = []
    for name in FILES[split]:
        path = Path(root) / name
        if not path.is_file():
            raise DataError(f"{path}: Fashion-MNIST file not found", hint=INSTALL_HINT)
        stamps.append(path.stat().st_mtime)
    return _load_split(str(root), split, tuple(stamps))


class _FashionMNISTSource:
    """What the train and val sources share: the arrays, the preprocessing and the class names."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, config: FashionMNISTConfig, shard: ShardInfo) -> None:
        if not 0 <= shard.rank < shard.world_size or shard.grad_accum < 1:
            raise DataError(f"invalid shard info {shard}: need 0 <= rank < world_size and grad_accum >= 1")
        self.images, self.labels = images, labels
        self.config, self.shard = config, shard
        self.num_samples = len(images)
        self.class_names = list(CLASS_NAMES)
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def run_files(self) -> dict[str, Path]:
        """The engine copies `classes.json` (index -> class name) into the run directory."""
        folder = Path(tempfile.mkdtemp(prefix="fashion-mnist-"))
        (folder / "classes.json").write_text(json.dumps(self.class_names, indent=1))
        return {"classes.json": folder / "classes.json"}

    def _batch(self, indices: np.ndarray, rows: int, augment=None, seeds: list[int] | None = None) -> dict[str, torch.Tensor]:
        size = self.config.image_size
        gray = torch.zeros(rows, 1, 28, 28)  # [rows, 1, 28, 28]; rows past `indices` stay padding
        gray[:len(indices), 0] = torch.from_numpy(self.images[indices].astype(np.float32) / 255.0)
        targets = torch.full((rows,), PADDING_TARGET, dtype=torch.int64)  # [rows]
        targets[:len(indices)] = torch.from_numpy(self.labels[indices].astype(np.int64))
        if augment is not None:  # training: one seed per image, no padding rows
            resized = torch.stack([augmented(augment, image, seed) for image, seed in zip(gray, seeds, strict=True)])
        else:
            resized = v2.functional.resize(gray, [size, size], antialias=True)  # [rows, 1, H, W]
        images = resized.expand(-1, 3, -1, -1)  # [rows, 3, H, W]
        return {"images": ((images - self.mean) / self.std).contiguous(), "targets": targets}


def augmented(augment, image: torch.Tensor, seed: int) -> torch.Tensor:
    """`augment(image)` [1, 28, 28] -> [1, H, W], drawing from a generator seeded with `seed`."""
    with seeded_torch_rng(seed):
        return augment(image)


class FashionMNISTTrainSource(OrderedTrainSource, _FashionMNISTSource):
    """Training batches forever, in a per-epoch permutation; resumable to the exact micro-batch."""

    def __init__(self, *arguments, **keywords) -> None:
        super().__init__(*arguments, **keywords)
        config = self.config
        self.order = training_order(self.num_samples, config.batch_size, self.shard, "fashion_mnist",
                                    hint="raise data.train_limit or lower data.batch_size")
        self.augment = None
        if config.augment:
            self.augment = v2.Compose([
                v2.RandomResizedCrop(config.image_size, scale=(config.crop_scale_min, 1.0), antialias=True),
                *([v2.RandomHorizontalFlip()] if config.flip else []),
            ])

    def next_batch(self) -> dict[str, torch.Tensor]:
        indices, seeds = self.order.next_items()
        return self._batch(indices, len(indices), self.augment, seeds)


class FashionMNISTValSource(OrderedValidationSource, _FashionMNISTSource):
    """One pass in file order; global batch k holds images [k*B*world, ...), rank r's part at r*B."""

    def __init__(self, *arguments, **keywords) -> None:
        super().__init__(*arguments, **keywords)
        self.order = ValidationOrder(self.num_samples, self.config.batch_size, self.shard)

    def validation_batch(self, indices) -> dict[str, torch.Tensor]:
        return self._batch(indices, self.config.batch_size)


def build_fashion_mnist(config: FashionMNISTConfig, split: str, shard: ShardInfo) -> _FashionMNISTSource:
    """The dataset factory: "train" reads the train files, "val" the t10k files."""
    if split not in FILES:
        raise DataError(f"fashion_mnist has splits 'train' and 'val', not '{split}'")
    images, labels = load_split(config.root, split)
    limit = config.train_limit if split == "train" else config.val_limit
    if limit:
        images, labels = images[:limit], labels[:limit]
    source_class = FashionMNISTTrainSource if split == "train" else FashionMNISTValSource
    return source_class(images, labels, config, shard)
