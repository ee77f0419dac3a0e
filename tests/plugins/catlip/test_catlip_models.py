import torch

from plugins.catlip.models import CatLIPViT, CatLIPViTB16Config, CatLIPViTConfig, CatLIPViTH14Config, CatLIPViTL16Config
from plugins.catlip.loss import CatLIPBCELoss


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
