"""Fixtures of the duo tests."""

from __future__ import annotations

import pytest
import torch

from duo_models import TINY


@pytest.fixture
def token_ids() -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
