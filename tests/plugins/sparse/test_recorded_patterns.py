"""Recorded activation patterns: the true ReLU pattern of a relufied model, through the .npz file."""

from __future__ import annotations

import pytest
import torch

from plugins.sparse.activation_patterns import load_recorded, record_patterns, save_recorded
from plugins.sparse.stats import record_ffn
from toolkit.errors import DataError

from sparse_models import prompt, tiny_openelm


def test_recorded_patterns_are_the_nonzero_activations_and_round_trip(tmp_path):
    model = tiny_openelm(ffn_activation="relu")
    ids = prompt(6, batch=2, seed=3)  # [2, 6]: 12 tokens, row after row
    patterns = record_patterns(model, ids)
    _, activations, _ = record_ffn(model, ids)
    assert len(patterns) == 12 and all(len(layers) == len(model.layers) for layers in patterns)
    for layer, activation in enumerate(activations):
        for token in range(12):
            row, column = divmod(token, 6)
            expected = torch.nonzero(activation[row, column] != 0).flatten()
            assert torch.equal(patterns[token][layer], expected)
            assert 0 < expected.numel() < activation.shape[-1]  # relu: some zero, some not
    ffn_dims = [activation.shape[-1] for activation in activations]
    save_recorded(tmp_path / "patterns.npz", patterns, ffn_dims)
    assert [p.name for p in tmp_path.iterdir()] == ["patterns.npz"]
    loaded = load_recorded(tmp_path / "patterns.npz", ffn_dims)
    assert all(torch.equal(a, b) for token_a, token_b in zip(patterns, loaded, strict=True)
               for a, b in zip(token_a, token_b, strict=True))


def test_a_silu_model_has_no_pattern_to_record():
    with pytest.raises(DataError, match="needs a relufied model; this one's FFN uses silu"):
        record_patterns(tiny_openelm(), prompt(4))
