"""The EMA in the usual convention (decay = weight of the old average), against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.config import TrainerConfig
from toolkit.engine.ema import ExponentialMovingAverage


def test_three_updates_match_the_hand_computation():
    model = nn.Linear(3, 2)
    start = model.weight.detach().clone()
    ema = ExponentialMovingAverage(model, decay=0.9)
    expected = start.clone()
    for value in (1.0, 2.0, -4.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        expected = 0.9 * expected + 0.1 * value
    torch.testing.assert_close(ema.state_dict()["weight"], expected)
    # The recipes' 0.9995 barely moves in one step: it is the old average's weight, not the new one's.
    slow = ExponentialMovingAverage(model, decay=0.9995)
    before = slow.state_dict()["weight"].clone()
    with torch.no_grad():
        model.weight.add_(10.0)
    slow.update(model)
    torch.testing.assert_close(slow.state_dict()["weight"], before + 0.0005 * (model.weight.detach() - before))


def test_state_round_trip_and_bad_decay():
    model = nn.Linear(3, 2)
    ema = ExponentialMovingAverage(model, decay=0.5)
    other = ExponentialMovingAverage(nn.Linear(3, 2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.state_dict()[k], ema.state_dict()[k]) for k in ema.state_dict())
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainerConfig(ema_decay=1.5)
