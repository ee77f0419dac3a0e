"""The CPU malloc tuning applies on glibc Linux and is harmless to repeat."""

import sys

import pytest
import torch

from toolkit.engine.malloc import keep_freed_memory_for_reuse


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_apply_and_allocation_still_works():
    assert keep_freed_memory_for_reuse() is True
    assert keep_freed_memory_for_reuse() is True
    big = torch.ones(4096, 4096)  # 64 MiB, now served from the heap
    assert big.sum().item() == 4096 * 4096
