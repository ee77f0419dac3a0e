"""A third-party toolkit plugin, packaged on its own: an MLP that learns y = sin(3 x0) + x1 / 2.

It registers a model, a dataset and a task through the `toolkit` entry-point group, and touches
nothing in `toolkit/`; its dataset takes its resumable order from the core (`toolkit.data.order`). The toolkit's tests install it and train it with `toolkit-train`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from toolkit import hookimpl
from toolkit.data.order import OrderedTrainSource, OrderedValidationSource, ValidationOrder, training_order
from toolkit.task import StepOutput


@dataclass
class WaveMLPConfig:
    in_features: int = 2
    hidden: int = 32


class WaveMLP(nn.Module):
    def __init__(self, config: WaveMLPConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(config.in_features, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # [B, F] -> [B]
        return self.layers(inputs).squeeze(-1)


@dataclass
class WaveDataConfig:
    batch_size: int = 16  # per rank and micro-step
    num_samples: int = 1024
    in_features: int = 2


class WavePoints:
    """Fixed points x in [-1, 1]^F and their targets; the val split has other points, a quarter as many."""

    def __init__(self, config: WaveDataConfig, split: str, shard) -> None:
        self.config, self.shard = config, shard
        generator = np.random.default_rng(1 if split == "val" else 0)
        count = config.num_samples if split == "train" else config.num_samples // 4
        self.inputs = torch.from_numpy(generator.uniform(-1, 1, (count, config.in_features)).astype(np.float32))
        self.targets = torch.sin(3 * self.inputs[:, 0]) + 0.5 * self.inputs[:, 1]

    def batch(self, indices: np.ndarray) -> dict:
        chosen = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return {"inputs": self.inputs[chosen], "targets": self.targets[chosen]}


class WaveTrain(OrderedTrainSource, WavePoints):
    """Each epoch visits the points in the core's seeded order, so the samples of one optimizer step do
    not depend on how many ranks share it, and a resumed run continues at the exact micro-batch."""

    def __init__(self, config: WaveDataConfig, split: str, shard) -> None:
        super().__init__(config, split, shard)
        self.order = training_order(len(self.inputs), config.batch_size, shard, "wave",
                                    hint="raise data.num_samples or lower data.batch_size")

    def next_batch(self) -> dict:
        return self.batch(self.order.next_indices())


class WaveValidation(OrderedValidationSource, WavePoints):
    """One pass over the validation points, split across ranks."""

    def __init__(self, config: WaveDataConfig, split: str, shard) -> None:
        super().__init__(config, split, shard)
        self.order = ValidationOrder(len(self.inputs), config.batch_size, shard)

    def validation_batch(self, indices: np.ndarray) -> dict:
        return self.batch(indices)


def build_wave(config: WaveDataConfig, split: str, shard) -> WavePoints:
    return WaveTrain(config, split, shard) if split == "train" else WaveValidation(config, split, shard)


@dataclass
class RegressionConfig:
    nan_at_step: int = 0  # >0: the loss turns NaN from this training step on (to test the engine)


class Regression:
    item_unit = "samples"

    def __init__(self, config: RegressionConfig, loss) -> None:
        self.config = config
        self.steps = 0

    def training_step(self, model, batch) -> StepOutput:
        self.steps += 1
        loss = nn.functional.mse_loss(model(batch["inputs"]), batch["targets"])
        if self.config.nan_at_step and self.steps >= self.config.nan_at_step:
            loss = loss * float("nan")
        return StepOutput(loss=loss, items=len(batch["targets"]))

    def validation_step(self, model, batch) -> StepOutput:
        return StepOutput(loss=nn.functional.mse_loss(model(batch["inputs"]), batch["targets"]),
                          items=len(batch["targets"]))


@hookimpl
def register_models(register):
    register("wave-mlp", WaveMLP, config=WaveMLPConfig)


@hookimpl
def register_datasets(register):
    register("wave", build_wave, config=WaveDataConfig)


@hookimpl
def register_tasks(register):
    register("regression", Regression, config=RegressionConfig)
