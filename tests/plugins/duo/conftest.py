"""Fixtures of the duo tests."""

from __future__ import annotations

import pytest
import torch

from duo_models import TINY, train_tiny_run


@pytest.fixture
def token_ids() -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 2-step random-routing run of duo/tiny.yaml at 2 layers, width 32 (its step-000002 saved)."""
    return train_tiny_run(tmp_path_factory.mktemp("duo-run") / "run")
