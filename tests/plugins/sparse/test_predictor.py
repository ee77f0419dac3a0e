"""Activation predictors: precision and recall by hand, thresholds, and learning a pattern."""

from __future__ import annotations

import pytest
import torch

from plugins.sparse.predictor import LowRankPredictor, PredictorConfig, precision_recall, train_predictor


def test_precision_and_recall_of_a_hand_made_case():
    predicted = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    actual = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    # hits: (0, 0), (1, 1), (1, 2) = 3; predicted 4; actual 5
    assert precision_recall(predicted, actual) == (0.75, 0.6)
    nothing = torch.zeros(2, 4, dtype=torch.bool)
    assert precision_recall(nothing, actual) == (1.0, 0.0)
    assert precision_recall(predicted, nothing) == (0.0, 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        precision_recall(predicted, actual[:, :3])


def test_threshold_is_on_the_probability():
    predictor = LowRankPredictor(2, 3, rank=1, threshold=0.3)
    with torch.no_grad():
        predictor.down.weight.zero_()
        predictor.up.bias.copy_(torch.tensor([-0.9, -0.8, 0.1]))  # sigmoid: 0.289, 0.310, 0.525
    assert predictor.predict(torch.ones(1, 2)).tolist() == [[False, True, True]]


def test_training_learns_a_low_rank_pattern():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1024, 16, generator=generator)
    basis = torch.randn(4, 16, generator=generator)
    mixing = torch.randn(32, 4, generator=generator)
    active = hidden @ basis.t() @ mixing.t() > 0.5  # [N, 32], rank-4 structure
    config = PredictorConfig(rank=4, steps=150, threshold=0.5, lr=1e-2, batch_size=256)
    predictor = train_predictor(hidden[:768], active[:768], config)
    precision, recall = precision_recall(predictor.predict(hidden[768:]), active[768:])  # held-out tokens
    assert precision > 0.9 and recall > 0.9


def test_bad_predictor_options():
    with pytest.raises(ValueError, match="threshold must be in"):
        PredictorConfig(threshold=1.0)
    with pytest.raises(ValueError, match="rank and batch_size"):
        PredictorConfig(rank=0)
