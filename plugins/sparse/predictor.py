"""Low-rank activation predictors ("LLM in a flash", DejaVu): which FFN neurons a token will use.

Per layer a small network reads the FFN's input h [D] and scores every neuron:
logits = W_up (W_down h) + bias, W_down [r, D], W_up [F, r], so it costs r (D + F) multiply-adds
against the FFN's 3 F D. A neuron is predicted active when sigmoid(logit) > threshold. Trained
with binary cross-entropy on activations recorded from the relufied model (stats.record_ffn),
and scored by precision (of the neurons predicted active, how many were) and recall (of the
active neurons, how many were predicted): recall is what quality needs, since a neuron predicted
inactive that was active is dropped from the sum, while precision is what speed needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PredictorConfig:
    rank: int = 32  # r of W_down [r, D]
    threshold: float = 0.3  # sigmoid(logit) above this: predicted active (below 0.5 favours recall)
    steps: int = 300  # Adam steps on the recorded tokens
    batch_size: int = 512  # tokens per step
    lr: float = 3.0e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("predictor: rank and batch_size must be >= 1, steps >= 0 and lr > 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"predictor threshold must be in (0, 1), got {self.threshold}")


class LowRankPredictor(nn.Module):
    """h [..., D] -> neuron logits [..., F] through a rank-r bottleneck."""

    def __init__(self, model_dim: int, ffn_dim: int, rank: int, threshold: float = 0.5) -> None:
        super().__init__()
        self.down = nn.Linear(model_dim, rank, bias=False)
        self.up = nn.Linear(rank, ffn_dim, bias=True)
        self.threshold = threshold
        self.logit_threshold = math.log(threshold / (1 - threshold))  # sigmoid(z) > t  <=>  z > logit(t)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(hidden))  # [..., F]

    @torch.no_grad()
    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """Predicted-active mask [..., F] (bool)."""
        return self(hidden) > self.logit_threshold


def precision_recall(predicted: torch.Tensor, actual: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of boolean masks of equal shape, pooled over every element.

    precision = |predicted and actual| / |predicted|, recall = |predicted and actual| / |actual|;
    an empty denominator (nothing predicted, or nothing active) counts as 1.0: no wrong call made.
    """
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and actual {tuple(actual.shape)} differ in shape")
    hits = int((predicted & actual).sum())
    predicted_count, actual_count = int(predicted.sum()), int(actual.sum())
    precision = hits / predicted_count if predicted_count else 1.0
    recall = hits / actual_count if actual_count else 1.0
    return precision, recall


def train_predictor(hidden: torch.Tensor, active: torch.Tensor, config: PredictorConfig) -> LowRankPredictor:
    """A predictor fitted to recorded FFN inputs hidden [N, D] and their active masks [N, F]."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)  # the initial weights
        predictor = LowRankPredictor(hidden.shape[1], active.shape[1], config.rank, config.threshold)
    targets = active.float()
    with torch.no_grad():  # start each bias at the neuron's log-odds of being active
        rate = targets.mean(0).clamp(1e-4, 1 - 1e-4)
        predictor.up.bias.copy_(torch.log(rate / (1 - rate)))
    optimizer = torch.optim.Adam(predictor.parameters(), lr=config.lr)
    with torch.enable_grad():
        for _ in range(config.steps):
            rows = torch.randint(0, hidden.shape[0], (min(config.batch_size, hidden.shape[0]),), generator=generator)
            loss = F.binary_cross_entropy_with_logits(predictor(hidden[rows]), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    predictor.eval()
    return predictor


class PredictedPattern:
    """ActiveSetSource from one LowRankPredictor per layer (the list's index is the layer)."""

    def __init__(self, predictors: list[LowRankPredictor]) -> None:
        self.predictors = predictors

    def active(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        return self.predictors[layer].predict(hidden)  # [B, S, F]
