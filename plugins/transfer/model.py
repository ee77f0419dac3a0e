"""The `transfer-vit` model: a CatLIP ViT tower from a pretraining run with a new downstream head.

`init_from` names a CatLIP run or checkpoint directory, read through the public checkpoint API
(`toolkit.checkpoint`): the tower's shape comes from that checkpoint's recipe.yaml, its weights
from model.safetensors (safetensors, never unpickled), and its synset vocabulary from synsets.json
(in the checkpoint directory or the run directory above it). Without `init_from` the tower takes
the shared `ViTTowerConfig` shape keys of the `model:` section.
`heads.head` is replaced by Linear(hidden_dim, len(class_names)), initialised by Transfer Init
(`head: transfer`, see plugins/transfer/transfer_init.py) or left at its random init
(`head: random`). `freeze_backbone: true` trains the head alone (a linear probe). Under
`with torch.device("meta")` (dry runs) the shape is still read but no weights are loaded.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from plugins.catlip.models import PRESETS, CatLIPViT, CatLIPViTConfig, ViTTowerConfig
from plugins.transfer.fashion_mnist import CLASS_NAMES
from plugins.transfer.transfer_init import (
    apply_transfer_init,
    log_matches,
    match_classes,
    report,
)
from toolkit.checkpoint import load_weights_into, model_config, resolve_checkpoint
from toolkit.errors import CheckpointError

logger = logging.getLogger(__name__)
VOCABULARY_FILE = "synsets.json"


@dataclass
class TransferViTConfig(ViTTowerConfig):
    """The `model:` section for `name: transfer-vit`.

    The inherited tower shape keys (`image_size`, `patch_size`, ...) apply when `init_from` is "";
    otherwise the pretrained run's recipe gives the shape.
    """

    init_from: str = ""  # CatLIP run or checkpoint directory; "" = train from scratch
    head: str = "transfer"  # "transfer" (Transfer Init) or "random"
    freeze_backbone: bool = False  # true: linear probe (only heads.head trains)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    wordnet_dir: str = "/usr/share/wordnet"  # Debian WordNet files, used when nltk has no WordNet data

    def __post_init__(self) -> None:
        if self.head not in ("transfer", "random"):
            raise ValueError(f"head must be 'transfer' or 'random', got '{self.head}'")
        if not self.class_names:
            raise ValueError("class_names must name at least one class")


class TransferViT(CatLIPViT):
    """images [B, 3, H, W] -> logits [B, len(class_names)]; `transfer_report` says which rows were copied."""

    transfer_report: dict | None = None

    def run_files(self) -> dict[str, Path]:
        """`transfer_init.json` (which classes matched which synset), for the run directory."""
        if self.transfer_report is None:
            return {}
        folder = Path(tempfile.mkdtemp(prefix="transfer-init-"))
        (folder / "transfer_init.json").write_text(json.dumps(self.transfer_report, indent=1))
        return {"transfer_init.json": folder / "transfer_init.json"}


def pretrained_config(checkpoint: Path) -> CatLIPViTConfig:
    """The CatLIP tower config a checkpoint's recipe.yaml names (reads no weights)."""
    described = model_config(checkpoint)
    name = described.component.name
    if name not in PRESETS:
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: model.name '{name}' is not a CatLIP ViT "
                              f"({', '.join(PRESETS)})", hint="model.init_from must name a CatLIP pretraining run")
    return described.config


def find_vocabulary(checkpoint: Path) -> Path:
    for folder in (checkpoint, checkpoint.parent):
        if (folder / VOCABULARY_FILE).is_file():
            return folder / VOCABULARY_FILE
    raise CheckpointError(f"{checkpoint}: no {VOCABULARY_FILE} here or in {checkpoint.parent}",
                          hint="Transfer Init needs the pretraining synset vocabulary; or set model.head=random")


def read_vocabulary(path: Path, head_rows: int, weights_path: Path) -> dict[str, int]:
    """synset name -> row of the pretrained head; the vocabulary must have exactly `head_rows` entries."""
    try:
        entries = json.loads(path.read_text())
        index = {str(entry["synset"]): row for row, entry in enumerate(entries)}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path}: not a synset vocabulary (list of {{\"synset\", ...}}): {error}") from error
    if len(entries) != head_rows:
        raise CheckpointError(f"{weights_path}: the pretrained head has {head_rows} rows but {path} lists "
                              f"{len(entries)} synsets", hint="init_from must name the run that built this vocabulary")
    return index


@functools.lru_cache(maxsize=2)
def cached_mapper(wordnet_dir: str):
    """A SynsetMapper over WordNet, loaded once per process (loading takes seconds)."""
    from plugins.catlip.synsets import SynsetMapper
    from plugins.catlip.wordnet import load_wordnet

    return SynsetMapper(load_wordnet(Path(wordnet_dir)))


def build_transfer_vit(config: TransferViTConfig) -> TransferViT:
    """The model factory (works on the meta device: then no file beyond recipe.yaml is read)."""
    on_meta = torch.empty(0).device.type == "meta"
    checkpoint = resolve_checkpoint(config.init_from) if config.init_from else None
    if checkpoint is not None:
        tower_config = pretrained_config(checkpoint)
    else:
        tower_config = CatLIPViTConfig(**config.tower_fields())
    model = TransferViT(tower_config)  # head over the pretraining vocabulary, replaced below
    weights_path = None
    if checkpoint is not None and not on_meta:
        weights_path = load_weights_into(model, checkpoint)
    head = nn.Linear(tower_config.hidden_dim, len(config.class_names))  # [C, D], [C]; default init
    if weights_path is not None and config.head == "transfer":
        weight, bias = model.heads.head.weight.detach(), model.heads.head.bias.detach()  # [V, D], [V] pretrained
        vocabulary = read_vocabulary(find_vocabulary(checkpoint), weight.shape[0], weights_path)
        matches = match_classes(config.class_names, cached_mapper(config.wordnet_dir), vocabulary)
        apply_transfer_init(head, weight, bias, matches)
        model.transfer_report = {"init_from": str(checkpoint), **report(matches)}
        log_matches(matches, str(checkpoint))
    model.heads.head = head
    model.config = tower_config
    model.class_names = list(config.class_names)
    if config.freeze_backbone:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("heads."))
    return model
