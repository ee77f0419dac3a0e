"""CatLIP image towers: torchvision Vision Transformers with a linear head over the synset vocabulary.

`ViTTowerConfig` is the one ViT tower shape of the vision family: CatLIP's models, CLIP's image
tower and the transfer plugin's `transfer-vit` all take their `model:` shape keys from it.
`catlip-vit-b16`, `catlip-vit-l16`, `catlip-vit-h14` are torchvision's published shapes (random
init); `catlip-vit-tiny` is small enough to train on 2 CPU cores. All build under
`with torch.device("meta"):` for dry runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, make_dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from toolkit.errors import DataError

ConfigType = TypeVar("ConfigType")


@dataclass
class ViTTowerConfig:
    """The shape of a ViT image tower; the defaults are the tiny CPU tower (4 layers, width 192)."""

    image_size: int = 64
    patch_size: int = 8
    num_layers: int = 4
    num_heads: int = 3
    hidden_dim: int = 192
    mlp_dim: int = 768
    dropout: float = 0.0
    attention_dropout: float = 0.0

    def tower_fields(self) -> dict[str, Any]:
        """Just the tower's shape, from this config or any config that extends it."""
        return {spec.name: getattr(self, spec.name) for spec in fields(ViTTowerConfig)}


# The presets' tower shapes, by the suffix of their names (catlip-vit-b16, clip-vit-b16): the tiny
# CPU tower and torchvision's published ViT-B/16, L/16 and H/14.
TOWER_SHAPES: dict[str, ViTTowerConfig] = {
    "tiny": ViTTowerConfig(),
    "b16": ViTTowerConfig(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
    "l16": ViTTowerConfig(image_size=224, patch_size=16, num_layers=24, num_heads=16, hidden_dim=1024, mlp_dim=4096),
    "h14": ViTTowerConfig(image_size=224, patch_size=14, num_layers=32, num_heads=16, hidden_dim=1280, mlp_dim=5120),
}


def preset_config(base: type[ConfigType], name: str, shape: ViTTowerConfig, **defaults: Any) -> type[ConfigType]:
    """A subclass of the config dataclass `base` whose fields default to `shape` and `defaults`.

    A recipe naming a preset (`model: {name: catlip-vit-b16}`) gets the published shape without
    spelling it out, and may still override any field.
    """
    base_fields = {spec.name: spec for spec in fields(base)}
    values = {**asdict(shape), **defaults}
    unknown = sorted(set(values) - set(base_fields))
    if unknown:
        raise TypeError(f"{base.__name__} has no fields {unknown}")
    # Redeclared with new defaults: a dataclass subclass keeps the base's field order.
    redeclared = [(key, base_fields[key].type, field(default=value)) for key, value in values.items()]
    preset = make_dataclass(name, redeclared, bases=(base,))
    preset.__module__ = base.__module__  # its string annotations resolve in the base's module
    return preset


@dataclass
class CatLIPViTConfig(ViTTowerConfig):
    """The `model:` section of a CatLIP ViT: the tower's shape plus its classifier head."""

    num_classes: int = 1000  # size of the synset vocabulary
    # Starting bias of every class logit. torchvision (and CoreNet) start at 0, which puts the
    # first BCE loss at num_classes * log 2 (266 for 384 classes) and spends the first steps
    # learning that labels are rare; -log(num_classes) starts near the label prior instead.
    head_bias_init: float = 0.0


PUBLISHED_CLASSES = 24320  # CatLIP's WordNet vocabulary mined from DataComp captions
CatLIPViTB16Config = preset_config(CatLIPViTConfig, "CatLIPViTB16Config", TOWER_SHAPES["b16"],
                                   num_classes=PUBLISHED_CLASSES)
CatLIPViTL16Config = preset_config(CatLIPViTConfig, "CatLIPViTL16Config", TOWER_SHAPES["l16"],
                                   num_classes=PUBLISHED_CLASSES)
CatLIPViTH14Config = preset_config(CatLIPViTConfig, "CatLIPViTH14Config", TOWER_SHAPES["h14"],
                                   num_classes=PUBLISHED_CLASSES)

PRESETS: dict[str, type[CatLIPViTConfig]] = {
    "catlip-vit-tiny": CatLIPViTConfig,
    "catlip-vit-b16": CatLIPViTB16Config,
    "catlip-vit-l16": CatLIPViTL16Config,
    "catlip-vit-h14": CatLIPViTH14Config,
}


class CatLIPViT(VisionTransformer):
    """images [B, 3, H, W] -> logits [B, num_classes]."""

    def __init__(self, config: CatLIPViTConfig) -> None:
        super().__init__(**config.tower_fields(), num_classes=config.num_classes)
        nn.init.constant_(self.heads.head.bias, config.head_bias_init)
        self.config = config

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> the class token after the encoder's final norm, [B, D].

        What the head reads: `heads(features(images))` equals `forward(images)`. A linear probe
        or a new head uses these features.
        """
        batch, _, height, width = images.shape
        if (height, width) != (self.image_size, self.image_size):
            raise DataError(f"the ViT tower takes {self.image_size}x{self.image_size} images, got {height}x{width}",
                            hint=f"set data.image_size to {self.image_size}")
        patches = self.conv_proj(images)  # [B, D, H/p, W/p]
        tokens = patches.flatten(2).transpose(1, 2)  # [B, S, D], patches in row-major order
        class_token = self.class_token.expand(batch, -1, -1)  # [B, 1, D]
        return self.encoder(torch.cat([class_token, tokens], dim=1))[:, 0]  # [B, D]

    def fsdp_units(self) -> list[nn.Module]:
        """The modules to shard one by one under FSDP: the encoder blocks."""
        return list(self.encoder.layers)


def build_catlip_vit(config: CatLIPViTConfig) -> CatLIPViT:
    return CatLIPViT(config)
