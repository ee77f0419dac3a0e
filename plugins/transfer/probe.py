"""The `linear_probe` evaluator: how good a CatLIP tower's frozen features are for Fashion-MNIST.

    toolkit-eval linear_probe --model runs/catlip-tiny [train_limit=10000] [tower=random]

The tower's features (the class token after the encoder's final norm, [N, D]) of the first
`train_limit` training images are standardised and fitted with a multinomial logistic regression
to convergence (L-BFGS, L2 penalty), the usual linear-probe protocol; `accuracy` is its score on
the test images (all 10,000, or `--limit N`). Unlike a probe trained by the engine for a fixed
number of steps, this measures the features, not the optimiser.

`zero_shot_accuracy` is Transfer Init before any training: the test images of the classes that
match a pretraining synset (the rule of plugins/transfer/transfer_init.py), each classified by the
highest logit among those classes' pretrained head rows; its chance level is 1 / matched classes.
It is left out for `tower=random`, whose features the pretrained head was never trained on.

`tower=random` scores a randomly initialised tower of the same shape instead (seeded): the
baseline that tells whether pretraining made the features better or worse for this data.
Per-image records ({target, predicted, zero_shot}) go to samples.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from plugins.catlip.models import CatLIPViT
from plugins.transfer.fashion_mnist import CLASS_NAMES, DEFAULT_ROOT, FashionMNISTConfig, FashionMNISTValSource, load_split
from plugins.transfer.model import cached_mapper, find_vocabulary, pretrained_config, read_vocabulary
from plugins.transfer.transfer_init import ClassMatch, match_classes
from toolkit.checkpoint import load_weights_into, resolve_checkpoint
from toolkit.data import ShardInfo
from toolkit.evaluation import EvalContext


@dataclass
class LinearProbeConfig:
    """Options of `toolkit-eval linear_probe` (key=value on the command line)."""

    root: str = DEFAULT_ROOT  # Fashion-MNIST idx folder
    train_limit: int = 10000  # fit on the first N training images (the file is shuffled)
    l2: float = 1e-3  # penalty on the probe's squared weights, added to the mean cross-entropy
    max_iterations: int = 500  # L-BFGS iterations for the fit
    tower: str = "pretrained"  # "pretrained", or "random": a seeded random tower of the same shape
    seed: int = 0  # the random tower's init
    wordnet_dir: str = "/usr/share/wordnet"  # Debian WordNet files, used when nltk has no WordNet data

    def __post_init__(self) -> None:
        if self.tower not in ("pretrained", "random"):
            raise ValueError(f"tower must be 'pretrained' or 'random', got '{self.tower}'")
        if self.train_limit < 10 or self.max_iterations < 1 or self.l2 < 0:
            raise ValueError("need train_limit >= 10, max_iterations >= 1 and l2 >= 0")


@dataclass
class ProbedTower:
    """What `load_model` hands `evaluate`: the tower and the pretrained rows of the matched classes."""

    tower: CatLIPViT
    identity: str
    matches: list[ClassMatch]
    head_weight: torch.Tensor  # [V, D] the pretrained synset head
    head_bias: torch.Tensor  # [V]


@torch.no_grad()
def tower_features(tower: CatLIPViT, images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W] -> the class token after the encoder's final norm, [B, D] (on the CPU)."""
    return tower.features(images.to(tower.class_token.device)).float().cpu()  # [B, D]


def fit_probe(features: torch.Tensor, targets: torch.Tensor, num_classes: int, l2: float,
              max_iterations: int) -> nn.Linear:
    """Multinomial logistic regression on standardised features [N, D] (the caller standardises)."""
    probe = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)  # a convex problem: start at the origin, so the fit is deterministic
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=max_iterations, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(probe(features), targets) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return probe


class LinearProbeEvaluator:
    """Fits the probe on training features, then scores the test images through the sample cache."""

    def __init__(self, config: LinearProbeConfig | None = None) -> None:
        self.config = config or LinearProbeConfig()

    def load_model(self, spec: str, device: str) -> ProbedTower:
        checkpoint = resolve_checkpoint(spec)
        tower_config = pretrained_config(checkpoint)
        pretrained = CatLIPViT(tower_config)
        weights_path = load_weights_into(pretrained, checkpoint)
        weight, bias = pretrained.heads.head.weight.detach(), pretrained.heads.head.bias.detach()  # [V, D], [V]
        tower = pretrained
        if self.config.tower == "random":
            torch.manual_seed(self.config.seed)
            tower = CatLIPViT(tower_config)  # the same shape, seeded, never trained
        vocabulary = read_vocabulary(find_vocabulary(checkpoint), weight.shape[0], weights_path)
        matches = match_classes(CLASS_NAMES, cached_mapper(self.config.wordnet_dir), vocabulary)
        identity = f"{checkpoint} tower={self.config.tower}" + (f" seed={self.config.seed}"
                                                                 if self.config.tower == "random" else "")
        return ProbedTower(tower.to(device).eval(), identity, matches, weight.float(), bias.float())

    def _source(self, split: str, limit: int, image_size: int) -> FashionMNISTValSource:
        images, labels = load_split(self.config.root, split)
        data_config = FashionMNISTConfig(root=self.config.root, image_size=image_size, batch_size=256)
        return FashionMNISTValSource(images[:limit], labels[:limit], data_config, ShardInfo())

    def evaluate(self, model: ProbedTower, context: EvalContext) -> dict[str, Any]:
        image_size = model.tower.image_size
        train = self._source("train", self.config.train_limit, image_size)
        features, targets = [], []
        for batch in train:
            keep = batch["targets"] >= 0  # padding rows of the last batch
            features.append(tower_features(model.tower, batch["images"][keep]))
            targets.append(batch["targets"][keep])
        train_features, train_targets = torch.cat(features), torch.cat(targets)  # [N, D], [N]
        mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)  # [D]
        probe = fit_probe((train_features - mean) / std, train_targets, len(CLASS_NAMES), self.config.l2,
                          self.config.max_iterations)
        train_accuracy = float((probe((train_features - mean) / std).argmax(1) == train_targets).float().mean())

        copied = [match for match in model.matches if match.copied]
        # Zero-shot reads the pretrained head off the tower's features: meaningless for a random tower.
        zero_shot_rows = copied if self.config.tower == "pretrained" else []
        rows = torch.tensor([match.vocabulary_row for match in zero_shot_rows], dtype=torch.long)
        class_of_row = [match.index for match in zero_shot_rows]
        test_images, _ = load_split(self.config.root, "val")
        count = min(len(test_images), context.limit or len(test_images))
        test = self._source("val", count, image_size)

        @torch.no_grad()
        def compute(indices: list[int]) -> list[dict[str, Any]]:
            batch = test._batch(np.asarray(indices), len(indices))
            test_features = tower_features(model.tower, batch["images"])  # [B, D]
            predicted = probe((test_features - mean) / std).argmax(1)  # [B]
            records = []
            zero_shot = None
            if zero_shot_rows:  # [B, matched]: the pretrained rows of the matched classes only
                logits = test_features @ model.head_weight[rows].T + model.head_bias[rows]
                zero_shot = [class_of_row[column] for column in logits.argmax(1).tolist()]
            for position, target in enumerate(batch["targets"].tolist()):
                record = {"target": target, "predicted": int(predicted[position])}
                if zero_shot is not None and target in class_of_row:
                    record["zero_shot"] = zero_shot[position]
                records.append(record)
            return records

        items = [(f"test-{index:05d}", index) for index in range(count)]
        records = context.map_samples(items, compute, description="test images")
        zero_shot_records = [record for record in records if "zero_shot" in record]
        metrics: dict[str, Any] = {
            "accuracy": sum(record["predicted"] == record["target"] for record in records) / max(1, len(records)),
            "train_accuracy": train_accuracy,
            "train_images": len(train_targets),
            "feature_dim": int(train_features.shape[1]),
            "tower": self.config.tower,
            "matched_classes": [f"{match.name}->{match.synset}" for match in copied],
        }
        if zero_shot_records:
            metrics["zero_shot_accuracy"] = (sum(record["zero_shot"] == record["target"] for record in zero_shot_records)
                                             / len(zero_shot_records))
            metrics["zero_shot_chance"] = 1 / len(zero_shot_rows)
            metrics["zero_shot_images"] = len(zero_shot_records)
        return metrics


def build_linear_probe(config: LinearProbeConfig | None = None) -> LinearProbeEvaluator:
    return LinearProbeEvaluator(config)
