"""Routers: per token and layer, which FFN a Duo model uses (big, small, or none: skip).

A router is an `nn.Module` with three duties:

    check(num_layers)           ValueError when its config does not fit a model of that depth
    bind(num_layers, model_dim) build what it needs for that model (the learned router's layers)
    route(layer, hidden)        a `Route` for the tokens of `hidden` [B, S, D] at block `layer`

`route` sees only the FFN input of each token (its own normed hidden state), never other
positions, so every router is causal: decoding one token at a time makes the same choices as a
full forward over the same prefix.

    random   per-layer probabilities of big / small / skip; in training each sequence draws from
             its own seed (the batch's `sample_seeds`, from the sequence's place in the epoch), so
             routes do not depend on the rank or the number of ranks; without seeds (generation,
             analysis) it draws from torch's default generator
    fixed    one choice per layer for every token
    learned  a linear router per layer on the hidden state; trained straight-through (or with
             Gumbel noise) with a budget loss pulling the share of big uses toward a target
    oracle   the best pattern a search (plugins.duo.oracle) saved for a budget of big uses
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Choice codes, in the order of a learned router's logits.
BIG, SMALL, SKIP = 0, 1, 2
CHOICE_NAMES = ("big", "small", "skip")


def choice_code(name: str, where: str) -> int:
    """The code of a choice name (`big`, `small`, `skip`), or a ValueError naming `where`."""
    if name not in CHOICE_NAMES:
        raise ValueError(f"{where}: '{name}' is not a choice; use one of {', '.join(CHOICE_NAMES)}")
    return CHOICE_NAMES.index(name)


def check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass
class Route:
    """One layer's decision for a batch.

    choices: [B, S] long codes (BIG / SMALL / SKIP).
    weights: [B, S, 3] mixing weights for training a learned router: the one-hot choice in value,
             the router's probabilities in gradient (straight-through). None means hard routing.
    """

    choices: torch.Tensor
    weights: torch.Tensor | None = None


def mixed_seed(sample_seed: int, layer: int, stream: int) -> int:
    """A generator seed for one sequence's draws at one layer (stream: which kind of draw)."""
    return int(np.random.SeedSequence([sample_seed, layer, stream]).generate_state(2, np.uint64)[0] >> 1)


def uniform_draws(shape: torch.Size, layer: int, stream: int, sample_seeds: list[int] | None,
                  device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform draws of `shape` [B, ...]: row b from its own generator seeded by (sample_seeds[b],
    layer, stream), so a sequence draws the same numbers in any batch and on any rank; from
    `generator` (None: torch's default) when there are no seeds."""
    if sample_seeds is None:
        return torch.rand(shape, device=device, generator=generator)
    if len(sample_seeds) != shape[0]:
        raise ValueError(f"{len(sample_seeds)} sample seeds for a batch of {shape[0]} sequences")
    rows = [torch.rand(shape[1:], generator=torch.Generator().manual_seed(mixed_seed(seed, layer, stream)))
            for seed in sample_seeds]
    return torch.stack(rows).to(device)


class Router(nn.Module):
    """The interface every router implements (see the module docstring).

    `sample_seeds` ([B] ints or None) is set by the model for the batch in flight (DuoOpenELM.seeded):
    routers that draw random numbers draw them per sequence from those seeds.
    """

    sample_seeds: list[int] | None = None

    def check(self, num_layers: int) -> None:
        """Raise ValueError when the config does not fit a model with `num_layers` blocks."""

    def bind(self, num_layers: int, model_dim: int) -> None:
        self.check(num_layers)

    def route(self, layer: int, hidden: torch.Tensor) -> Route:
        raise NotImplementedError

    def auxiliary_loss(self) -> torch.Tensor | None:
        """A loss the task adds to the language-model loss (and resets), or None."""
        return None


def _per_layer(values: list[float], layer: int) -> float:
    return values[0] if len(values) == 1 else values[layer]


@dataclass
class RandomRouterConfig:
    """`router: random`: each token draws big / small / skip with these per-layer probabilities.

    Each list has one value (every layer) or one per layer; at each layer the three must sum to 1.
    """

    big: list[float] = field(default_factory=lambda: [0.5])  # probability of the big FFN
    small: list[float] = field(default_factory=lambda: [0.25])  # probability of the small FFN
    skip: list[float] = field(default_factory=lambda: [0.25])  # probability of no FFN

    def __post_init__(self) -> None:
        for name in ("big", "small", "skip"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"random router: {name} needs at least one probability")
            for value in values:
                check_share(f"random router: {name} probability", value)


class RandomRouter(Router):
    def __init__(self, config: RandomRouterConfig) -> None:
        super().__init__()
        self.config = config
        self.generator: torch.Generator | None = None  # None: the engine's (default) generator

    def check(self, num_layers: int) -> None:
        config = self.config
        for name in ("big", "small", "skip"):
            count = len(getattr(config, name))
            if count not in (1, num_layers):
                raise ValueError(f"random router: {name} has {count} probabilities, but the model has "
                                 f"{num_layers} layers (give 1 or {num_layers})")
        for layer in range(num_layers):
            total = sum(_per_layer(getattr(config, name), layer) for name in ("big", "small", "skip"))
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ValueError(f"random router: layer {layer}: big + small + skip = {total:g}, not 1")

    def route(self, layer: int, hidden: torch.Tensor) -> Route:
        big = _per_layer(self.config.big, layer)
        small = _per_layer(self.config.small, layer)
        draws = uniform_draws(hidden.shape[:2], layer, 0, self.sample_seeds, hidden.device, self.generator)  # [B, S]
        # Below `big` -> BIG, below `big + small` -> SMALL, else SKIP.
        choices = (draws >= big).long() + (draws >= big + small).long()
        return Route(choices)


@dataclass
class FixedRouterConfig:
    """`router: fixed`: one choice per layer (big, small or skip) for every token."""

    pattern: list[str] = field(default_factory=lambda: ["big"])  # one of big / small / skip per layer

    def __post_init__(self) -> None:
        for index, name in enumerate(self.pattern):
            choice_code(name, f"fixed router: pattern[{index}]")


class FixedRouter(Router):
    def __init__(self, pattern: list[str], label: str = "fixed router") -> None:
        super().__init__()
        self.label = label
        self.codes = [choice_code(name, f"{label}: pattern[{i}]") for i, name in enumerate(pattern)]

    def check(self, num_layers: int) -> None:
        if len(self.codes) != num_layers:
            raise ValueError(f"{self.label}: the pattern has {len(self.codes)} layers, but the model has {num_layers}")

    def route(self, layer: int, hidden: torch.Tensor) -> Route:
        return Route(torch.full(hidden.shape[:2], self.codes[layer], dtype=torch.long, device=hidden.device))


@dataclass
class LearnedRouterConfig:
    """`router: learned`: a linear map per layer from the token's hidden state to 3 logits."""

    target_big: float = 0.25  # the budget: share of (token, layer) pairs that should use the big FFN
    budget_weight: float = 1.0  # weight of (mean big probability - target_big)^2 in the loss
    allow_skip: bool = True  # False: only big or small
    estimator: str = "straight_through"  # or "gumbel": straight-through on Gumbel-perturbed logits
    temperature: float = 1.0  # softmax temperature of the soft weights

    def __post_init__(self) -> None:
        check_share("learned router: target_big", self.target_big)
        if self.budget_weight < 0:
            raise ValueError(f"learned router: budget_weight must be >= 0, got {self.budget_weight}")
        if self.estimator not in ("straight_through", "gumbel"):
            raise ValueError(f"learned router: estimator must be straight_through or gumbel, got '{self.estimator}'")
        if self.temperature <= 0:
            raise ValueError(f"learned router: temperature must be > 0, got {self.temperature}")


class LearnedRouter(Router):
    def __init__(self, config: LearnedRouterConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList()
        self._big_probabilities: list[torch.Tensor] = []  # per layer routed in this forward

    def bind(self, num_layers: int, model_dim: int) -> None:
        self.check(num_layers)
        self.layers = nn.ModuleList(nn.Linear(model_dim, 3, bias=False) for _ in range(num_layers))

    def logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.layers[layer](hidden).float()  # [B, S, 3]
        if not self.config.allow_skip:
            logits = logits.masked_fill(torch.arange(3, device=logits.device) == SKIP, float("-inf"))
        return logits

    def route(self, layer: int, hidden: torch.Tensor) -> Route:
        logits = self.logits(layer, hidden)  # [B, S, 3]
        if not (self.training and torch.is_grad_enabled()):
            return Route(logits.argmax(dim=-1))
        config = self.config
        scores = logits
        if config.estimator == "gumbel":
            uniform = uniform_draws(logits.shape, layer, 1, self.sample_seeds, logits.device).clamp_(1e-9, 1 - 1e-9)
            scores = logits - torch.log(-torch.log(uniform))
        soft = F.softmax(scores / config.temperature, dim=-1)  # [B, S, 3]
        choices = soft.argmax(dim=-1)  # [B, S]
        hard = F.one_hot(choices, 3).to(soft.dtype)
        self._big_probabilities.append(F.softmax(logits, dim=-1)[..., BIG].mean())
        return Route(choices, hard + soft - soft.detach())

    def auxiliary_loss(self) -> torch.Tensor | None:
        if not self._big_probabilities:
            return None
        share = torch.stack(self._big_probabilities).mean()
        self._big_probabilities = []
        return self.config.budget_weight * (share - self.config.target_big) ** 2


@dataclass
class OracleRouterConfig:
    """`router: oracle`: the best pattern the oracle search saved for a budget of big uses."""

    patterns_file: str = ""  # JSON written by `python -m plugins.duo.oracle`
    max_big: int = 0  # the budget: at most this many layers use the big FFN

    def __post_init__(self) -> None:
        if self.max_big < 0:
            raise ValueError(f"oracle router: max_big must be >= 0, got {self.max_big}")


def read_oracle_pattern(path: str, max_big: int) -> list[str]:
    """The best corpus-level pattern for `max_big` in an oracle JSON file (ValueError otherwise)."""
    if not path:
        raise ValueError("oracle router: patterns_file is required (the JSON of `python -m plugins.duo.oracle`)")
    try:
        saved: dict[str, Any] = json.loads(Path(path).read_text())
        entries = {int(entry["max_big"]): entry for entry in saved["budgets"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"oracle router: cannot read patterns_file {path}: {error}") from error
    if max_big not in entries:
        raise ValueError(f"oracle router: {path} has no pattern for max_big={max_big} "
                         f"(it has {', '.join(map(str, sorted(entries)))})")
    return list(entries[max_big]["best_pattern"])


class OracleRouter(FixedRouter):
    def __init__(self, config: OracleRouterConfig) -> None:
        super().__init__(read_oracle_pattern(config.patterns_file, config.max_big), label="oracle router")
        self.config = config


def build_random(config: RandomRouterConfig) -> RandomRouter:
    return RandomRouter(config)


def build_fixed(config: FixedRouterConfig) -> FixedRouter:
    return FixedRouter(config.pattern)


def build_learned(config: LearnedRouterConfig) -> LearnedRouter:
    return LearnedRouter(config)


def build_oracle(config: OracleRouterConfig) -> OracleRouter:
    return OracleRouter(config)


def make_router(name: str, options: dict[str, Any], num_layers: int, where: str = "model.router_options") -> Router:
    """The registered router `name` built from `options` and checked against `num_layers`.

    RecipeError (one line, exit 2) for unknown names, bad options or a config that does not fit.
    """
    from toolkit.config import build_config
    from toolkit.errors import RecipeError
    from toolkit.plugins import get_registries

    component = get_registries()["routers"].get(name)
    config = build_config(component.config_class, dict(options), where) if component.config_class else None
    try:
        router = component.factory(config)
        router.check(num_layers)
    except ValueError as error:
        raise RecipeError(f"{where}: {error}") from error
    return router
