"""The CLIP baseline's two towers: CatLIP's ViT for images and open_clip's text transformer.

The image tower is exactly the CatLIP model of the same name (`clip-vit-tiny` <-> `catlip-vit-
tiny`) with its classification head used as the projection into the joint embedding, so the two
methods differ only in what follows the image features. The text tower is open_clip's
`TextTransformer` built from the `text_cfg` of an open_clip model config (default ViT-S-32: width
384, 6 heads, 12 layers, 77 tokens). The logit scale is learnt, starting at 1/0.07 as in CLIP,
and kept in [1, 100] as open_clip keeps it (its log clamped to [0, ln 100], see `CLIPModel.forward`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from plugins.catlip.models import TOWER_SHAPES, CatLIPViT, CatLIPViTConfig, preset_config
from toolkit.errors import RecipeError

LOG_SCALE_MAX = math.log(100)  # CLIP's bound on the logit scale (open_clip: 4.6052)


def open_clip_text_config(model_name: str) -> dict:
    """The `text_cfg` of an open_clip model config (offline: configs ship with the package)."""
    try:
        import open_clip
    except ImportError as error:
        raise RecipeError("the CLIP baseline needs open_clip", hint="pip install open-clip-torch") from error
    config = open_clip.get_model_config(model_name)
    if config is None or "text_cfg" not in config:
        known = ", ".join(name for name in open_clip.list_models() if name.startswith("ViT-S"))
        raise RecipeError(f"model.text_model: '{model_name}' is not an open_clip model with a text tower",
                          hint=f"for example {known}")
    return dict(config["text_cfg"])


@dataclass
class CLIPConfig(CatLIPViTConfig):
    """The `model:` section of a CLIP baseline: CatLIP's image tower fields plus the text side.

    The image tower is a CatLIP ViT (the shared `ViTTowerConfig` shape); `head_bias_init` is
    accepted so that a recipe built on a CatLIP one validates, but the projection ignores it.
    """

    num_classes: int = 384  # here: the joint embedding width (the image head projects to it)
    text_model: str = "ViT-S-32"  # open_clip config whose text tower is used


PRESETS: dict[str, type[CLIPConfig]] = {  # the image towers of catlip-vit-tiny and catlip-vit-b16
    "clip-vit-tiny": preset_config(CLIPConfig, "CLIPViTTinyConfig", TOWER_SHAPES["tiny"], num_classes=384),
    "clip-vit-b16": preset_config(CLIPConfig, "CLIPViTB16Config", TOWER_SHAPES["b16"], num_classes=512),
}


class CLIPModel(nn.Module):
    """(images [B, 3, H, W], texts [B, 77]) -> (image features [B, E], text features [B, E], scale).

    Features are L2-normalised; `scale` is exp(logit_scale), what open_clip's ClipLoss expects.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.config = config
        self.image_tower = CatLIPViT(config)  # its head maps the class token to the embedding
        # torchvision starts a classifier head at zero, which is right for CatLIP's logits but
        # would make every image embedding zero here: a projection starts random, as in CLIP.
        head = self.image_tower.heads.head
        nn.init.normal_(head.weight, std=config.hidden_dim ** -0.5)
        nn.init.zeros_(head.bias)
        text = open_clip_text_config(config.text_model)
        self.text_tower = TextTransformer(
            context_length=text.get("context_length", 77), vocab_size=text.get("vocab_size", 49408),
            width=text["width"], heads=text["heads"], layers=text["layers"], output_dim=config.num_classes,
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.image_tower(images), dim=-1)  # [B, E]
        text_features = F.normalize(self.text_tower(texts), dim=-1)  # [B, E]
        if not self.training:  # no step to follow: bound the returned value, leave the parameter
            return image_features, text_features, self.logit_scale.clamp(0, LOG_SCALE_MAX).exp()
        # open_clip clamps the parameter itself to [0, ln 100] after every optimizer step; clamping
        # it before the next forward gives the same sequence of values. The parameter is then in
        # range, so it is used unclamped: a clamp op would zero or halve its gradient at the bound.
        # (Under FSDP this clamps the gathered copy, which still bounds this forward's scale.)
        with torch.no_grad():
            self.logit_scale.clamp_(0, LOG_SCALE_MAX)
        return image_features, text_features, self.logit_scale.exp()

    def fsdp_units(self) -> list[nn.Module]:
        return [*self.image_tower.fsdp_units(), *self.text_tower.transformer.resblocks]


def build_clip(config: CLIPConfig) -> CLIPModel:
    return CLIPModel(config)
