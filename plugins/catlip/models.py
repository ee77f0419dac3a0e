"""CatLIP image towers: torchvision Vision Transformers with a linear head over the synset vocabulary.

`catlip-vit-b16`, `catlip-vit-l16`, `catlip-vit-h14` are torchvision's published shapes (random
init); `catlip-vit-tiny` is small enough to train on 2 CPU cores. All build under
`with torch.device("meta"):` for dry runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer


@dataclass
class CatLIPViTConfig:
    """The `model:` section of a CatLIP ViT; the defaults are the tiny CPU model."""

    num_classes: int = 1000  # size of the synset vocabulary
    image_size: int = 64
    patch_size: int = 8
    num_layers: int = 4
    num_heads: int = 3
    hidden_dim: int = 192
    mlp_dim: int = 768
    dropout: float = 0.0
    attention_dropout: float = 0.0
    # Starting bias of every class logit. torchvision (and CoreNet) start at 0, which puts the
    # first BCE loss at num_classes * log 2 (266 for 384 classes) and spends the first steps
    # learning that labels are rare; -log(num_classes) starts near the label prior instead.
    head_bias_init: float = 0.0


@dataclass
class CatLIPViTB16Config(CatLIPViTConfig):
    num_classes: int = 24320
    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072


@dataclass
class CatLIPViTL16Config(CatLIPViTConfig):
    num_classes: int = 24320
    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 24
    num_heads: int = 16
    hidden_dim: int = 1024
    mlp_dim: int = 4096


@dataclass
class CatLIPViTH14Config(CatLIPViTConfig):
    num_classes: int = 24320
    image_size: int = 224
    patch_size: int = 14
    num_layers: int = 32
    num_heads: int = 16
    hidden_dim: int = 1280
    mlp_dim: int = 5120


PRESETS: dict[str, type[CatLIPViTConfig]] = {
    "catlip-vit-tiny": CatLIPViTConfig,
    "catlip-vit-b16": CatLIPViTB16Config,
    "catlip-vit-l16": CatLIPViTL16Config,
    "catlip-vit-h14": CatLIPViTH14Config,
}


class CatLIPViT(VisionTransformer):
    """images [B, 3, H, W] -> logits [B, num_classes]."""

    def __init__(self, config: CatLIPViTConfig) -> None:
        super().__init__(
            image_size=config.image_size, patch_size=config.patch_size, num_layers=config.num_layers,
            num_heads=config.num_heads, hidden_dim=config.hidden_dim, mlp_dim=config.mlp_dim,
            dropout=config.dropout, attention_dropout=config.attention_dropout,
            num_classes=config.num_classes,
        )
        nn.init.constant_(self.heads.head.bias, config.head_bias_init)
        self.config = config

    def fsdp_units(self) -> list[nn.Module]:
        """The modules to shard one by one under FSDP: the encoder blocks."""
        return list(self.encoder.layers)


def build_catlip_vit(config: CatLIPViTConfig) -> CatLIPViT:
    return CatLIPViT(config)
