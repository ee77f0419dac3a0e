"""Fixtures for the transfer tests: a small CatLIP pretraining run on disk and fake idx files."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from plugins.catlip.models import CatLIPViT, CatLIPViTConfig
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint

# The pretraining vocabulary of the fixture run: row i of the head is synset i.
VOCABULARY = ["modifier.n.01", "dress.n.01", "coat.n.01", "boot.n.01", "dog.n.01"]
TOWER = {"num_classes": len(VOCABULARY), "image_size": 16, "patch_size": 8, "num_layers": 1, "num_heads": 2,
         "hidden_dim": 24, "mlp_dim": 48}


def write_pretrained_run(run_dir: Path, vocabulary: list[str] = VOCABULARY) -> Path:
    """A CatLIP run directory as the trainer leaves it: recipe.yaml, synsets.json, step-000010/."""
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(123)
    model = CatLIPViT(CatLIPViTConfig(**TOWER))
    with torch.no_grad():  # distinct, recognisable head rows
        model.heads.head.weight.normal_()
        model.heads.head.bias.copy_(torch.arange(len(VOCABULARY), dtype=torch.float32) + 10.0)
    recipe = yaml.safe_dump({"model": {"name": "catlip-vit-tiny", **TOWER}, "task": {"name": "multilabel_classification"}})
    (run_dir / "recipe.yaml").write_text(recipe)
    entries = [{"synset": name, "offset": index, "count": 10 - index, "lemma": name.split(".")[0]}
               for index, name in enumerate(vocabulary)]
    (run_dir / "synsets.json").write_text(json.dumps(entries))
    content = CheckpointContent(step=10, model=model.state_dict(), optimizer={}, scheduler={},
                                trainer_state={"step": 10}, recipe_yaml=recipe)
    save_checkpoint(run_dir, content, keep_last=1)
    return run_dir


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory) -> Path:
    return write_pretrained_run(tmp_path_factory.mktemp("catlip_pretrained") / "run")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion_root(root: Path, train: int = 40, val: int = 13) -> Path:
    """Fake Fashion-MNIST files: image i is filled with the value i, its label is i % 10."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", val)):
        images = np.repeat(np.arange(count, dtype=np.uint8)[:, None, None], 28, axis=1).repeat(28, axis=2)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return root


@pytest.fixture
def fashion_root(tmp_path) -> Path:
    return write_fashion_root(tmp_path / "fashion")
