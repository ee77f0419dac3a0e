import math

import torch
import torch.nn.functional as F

from plugins.catlip.loss import CatLIPBCELoss


def test_bce_matches_hand_computation():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])

    def bce(x, y):
        p = 1.0 / (1.0 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = sum(bce(x, y) for row_x, row_y in zip(logits.tolist(), target.tolist())
                   for x, y in zip(row_x, row_y)) / 2
    assert torch.allclose(CatLIPBCELoss()(logits, target), torch.tensor(expected), atol=1e-6)


def test_bce_is_fp32_under_bf16_autocast():
    logits = torch.randn(4, 10, requires_grad=True)
    target = (torch.rand(4, 10) > 0.7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CatLIPBCELoss()(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    loss.backward()
    # The same loss in fp32 on the bf16-rounded logits: sum over classes, mean over the batch.
    rounded = logits.detach().bfloat16().float().requires_grad_()
    expected = F.binary_cross_entropy_with_logits(rounded, target, reduction="sum") / 4
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), atol=1e-6, rtol=1e-6)
    # The gradient passes back through the bf16 cast: rounded to 8 significant bits (0.4%).
    torch.testing.assert_close(logits.grad, rounded.grad, atol=1e-6, rtol=1e-2)
