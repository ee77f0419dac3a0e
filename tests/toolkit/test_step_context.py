"""The step services: accumulation scaling, figures reduced per update, MFU counted from the raw
model behind a wrapper, the NaN guard, and a custom loop that forgets to update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.capabilities import TrainingFlops
from toolkit.config import TrainerConfig
from toolkit.engine.distributed import DistContext
from toolkit.engine.loop import StepContext, default_train_step
from toolkit.engine.models import ModelSet, RunModel
from toolkit.errors import TrainingError
from toolkit.task import Role, StepOutput


class Counted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x):  # [B, 4] -> [B, 1]
        return self.linear(x)

    def training_flops_per_item(self, sequence_length: int) -> float:
        return 100.0 * sequence_length


class Wrapper(nn.Module):  # stands in for DDP / torch.compile: declares nothing itself
    def __init__(self, module):
        super().__init__()
        self.inner = module

    def forward(self, x):
        return self.inner(x)


class Regression:
    def __init__(self, poison: bool = False) -> None:
        self.poison = poison

    def training_step(self, model, batch):
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        if self.poison:
            loss = loss * float("nan")
        return StepOutput(loss=loss, items=batch["x"].shape[0], sequence_length=3, metrics={"two": 2.0})


def make_context(accum: int = 2, clip: float = 0.0):
    torch.manual_seed(0)
    module = Counted()
    models = ModelSet([RunModel("model", module, Wrapper(module), Role.trained)], single=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    batches = iter([{"x": torch.randn(5, 4), "y": torch.randn(5, 1)} for _ in range(accum)])
    config = TrainerConfig(grad_accum=accum, clip_grad=clip)
    return module, StepContext(models, optimizer, batches, config, DistContext(0, 1, 0, torch.device("cpu")), 0)


def test_accumulated_step_equals_the_mean_of_its_micro_batches():
    module, context = make_context(accum=2)
    batches = [{"x": torch.randn(5, 4), "y": torch.randn(5, 1)} for _ in range(2)]
    context._batches = iter(batches)
    reference = Counted()
    reference.load_state_dict(module.state_dict())
    default_train_step(Regression(), context)
    losses = [((reference(b["x"]) - b["y"]) ** 2).mean() for b in batches]
    (sum(losses) / 2).backward()
    with torch.no_grad():
        expected = reference.linear.weight - 0.1 * reference.linear.weight.grad
    torch.testing.assert_close(module.linear.weight, expected)
    summary = context.summary()
    assert summary["loss"] == pytest.approx((sum(losses) / 2).item())
    assert summary["items"] == 10 and summary["two"] == pytest.approx(2.0)
    assert isinstance(module, TrainingFlops) and not isinstance(context.models, TrainingFlops)
    assert summary["flops"] == pytest.approx(10 * 100.0 * 3)  # from the raw model, through the wrapper


def test_non_finite_loss_stops_before_the_update():
    module, context = make_context(accum=1, clip=1.0)
    before = module.linear.weight.detach().clone()
    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        default_train_step(Regression(poison=True), context)
    assert torch.equal(module.linear.weight, before)


def test_a_custom_step_without_an_update_is_refused():
    _, context = make_context(accum=1)
    context.backward(Regression().training_step(context.models, context.next_batch()))
    with pytest.raises(TrainingError, match="made no optimizer update"):
        context.summary()
