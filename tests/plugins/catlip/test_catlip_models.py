from dataclasses import asdict

import pytest
import torch

from plugins.catlip.models import CatLIPViT, CatLIPViTB16Config, CatLIPViTConfig, CatLIPViTH14Config, CatLIPViTL16Config
from plugins.catlip.models import PRESETS, TOWER_SHAPES, ViTTowerConfig
from plugins.catlip.loss import CatLIPBCELoss
from toolkit.config import build_config
from toolkit.errors import DataError, RecipeError


def test_big_vits_build_on_meta():
    with torch.device("meta"):
        b16 = CatLIPViT(CatLIPViTB16Config(num_classes=1000))
        CatLIPViT(CatLIPViTL16Config())
        CatLIPViT(CatLIPViTH14Config())
    params = sum(p.numel() for p in b16.parameters())
    assert params == 86_567_656  # torchvision's ViT-B/16 with a 1000-way head
    assert len(b16.fsdp_units()) == 12


def test_tiny_vit_trains_on_fixed_batch():
    torch.manual_seed(0)
    model = CatLIPViT(CatLIPViTConfig(num_classes=16))
    images = torch.randn(4, 3, 64, 64)
    labels = (torch.rand(4, 16) > 0.8).float()
    loss_fn = CatLIPBCELoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        logits = model(images)
        assert logits.shape == (4, 16)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_head_bias_starts_at_the_configured_prior():
    default = CatLIPViT(CatLIPViTConfig(num_classes=8))
    assert torch.count_nonzero(default.heads.head.bias) == 0  # torchvision's (and CoreNet's) zero start
    prior = CatLIPViT(CatLIPViTConfig(num_classes=8, head_bias_init=-2.5))
    assert torch.equal(prior.heads.head.bias, torch.full((8,), -2.5))
    logits = prior(torch.zeros(2, 3, 64, 64))  # [2, 8]: the head's weights start at zero
    assert torch.allclose(logits, torch.full((2, 8), -2.5))


def test_features_are_what_the_head_reads():
    torch.manual_seed(0)
    model = CatLIPViT(CatLIPViTConfig(num_classes=6, image_size=16, patch_size=8, num_layers=1, num_heads=2,
                                      hidden_dim=24, mlp_dim=48)).eval()
    images = torch.randn(3, 3, 16, 16)
    features = model.features(images)  # [3, 24]
    assert features.shape == (3, 24)
    assert torch.equal(model.heads(features), model(images))  # torchvision's own forward


def test_features_name_the_image_size_the_tower_takes():
    model = CatLIPViT(CatLIPViTConfig(num_classes=2, image_size=16, patch_size=8, num_layers=1, num_heads=2,
                                      hidden_dim=24, mlp_dim=48))
    with pytest.raises(DataError, match="takes 16x16 images, got 32x32"):
        model.features(torch.randn(1, 3, 32, 32))


def test_one_tower_config_for_catlip_clip_and_transfer():
    """CLIP's image tower and transfer's from-scratch tower take CatLIP's shape keys and presets."""
    from plugins.clip.model import PRESETS as CLIP_PRESETS
    from plugins.transfer.model import TransferViTConfig

    for config_class in (CatLIPViTConfig, TransferViTConfig, *CLIP_PRESETS.values(), *PRESETS.values()):
        assert issubclass(config_class, ViTTowerConfig)
    assert CatLIPViTB16Config().tower_fields() == asdict(TOWER_SHAPES["b16"])
    assert CLIP_PRESETS["clip-vit-b16"]().tower_fields() == asdict(TOWER_SHAPES["b16"])
    assert CLIP_PRESETS["clip-vit-tiny"]().tower_fields() == CatLIPViTConfig().tower_fields()
    assert TransferViTConfig().tower_fields() == CatLIPViTConfig().tower_fields()
    assert (CatLIPViTB16Config().num_classes, CLIP_PRESETS["clip-vit-b16"]().num_classes) == (24320, 512)


def test_a_preset_keeps_every_field_overridable_and_checked():
    config = build_config(CatLIPViTL16Config, {"num_classes": 10, "patch_size": 32}, "model")
    assert (config.num_classes, config.patch_size, config.num_layers) == (10, 32, 24)
    with pytest.raises(RecipeError, match="model.num_layer"):
        build_config(CatLIPViTL16Config, {"num_layer": 3}, "model")
