"""A third-party toolkit plugin, packaged on its own: an MLP that learns y = sin(3 x0) + x1 / 2.

It registers a model, a dataset and a task through the `toolkit` entry-point group, and touches
nothing in `toolkit/`. The toolkit's tests install it and train it with `toolkit-train`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from toolkit import hookimpl
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


class WaveData:
    """Fixed points x in [-1, 1]^F; each epoch visits them in a seeded permutation.

    A global batch is cut into world_size * grad_accum equal slices, so the samples of one
    optimizer step do not depend on how many ranks share it.
    """

    def __init__(self, config: WaveDataConfig, split: str, shard) -> None:
        self.config, self.split, self.shard = config, split, shard
        generator = np.random.default_rng(1 if split == "val" else 0)
        count = config.num_samples if split == "train" else config.num_samples // 4
        self.inputs = torch.from_numpy(generator.uniform(-1, 1, (count, config.in_features)).astype(np.float32))
        self.targets = torch.sin(3 * self.inputs[:, 0]) + 0.5 * self.inputs[:, 1]
        self.position = 0  # global batches consumed

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.shard.seed, epoch]).permutation(len(self.inputs))

    def __iter__(self):
        shard, batch = self.shard, self.config.batch_size
        if self.split == "val":
            indices = np.arange(len(self.inputs))[shard.rank :: shard.world_size]
            for start in range(0, len(indices), batch):
                chosen = indices[start : start + batch]
                yield {"inputs": self.inputs[chosen], "targets": self.targets[chosen]}
            return
        global_size = batch * shard.world_size * shard.grad_accum
        per_epoch = len(self.inputs) // global_size
        while True:
            epoch, within = divmod(self.position, per_epoch)
            order = self._order(epoch)[within * global_size : (within + 1) * global_size]
            self.position += 1
            for micro in range(shard.grad_accum):
                slot = micro * shard.world_size + shard.rank
                chosen = order[slot * batch : (slot + 1) * batch]
                yield {"inputs": self.inputs[chosen], "targets": self.targets[chosen]}

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


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
    register("wave", WaveData, config=WaveDataConfig)


@hookimpl
def register_tasks(register):
    register("regression", Regression, config=RegressionConfig)
