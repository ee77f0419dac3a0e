"""The arithmetic of a benchmark cell, in one place so that each definition is tested once.

- Throughput: the steps of a cell are [warm-up | window 1 | window 2 | ...]. A window's tokens/s
  is the tokens of its steps (all ranks) over the sum of its steps' times, each step's time being
  the slowest rank's (ranks wait for each other in every collective). Warm-up steps (allocator,
  kernel selection, the first optimizer step creating its state) are never counted.
- MFU: a step's training FLOPs summed over every rank, over its time, over the peak of the whole
  job: per-device peak x world size. Not cumulative tokens over one step's time, not a peak for
  one device against the FLOPs of all.
- Token/$: tokens/s over dollars per second, where dollars per second is the price of one device
  per hour x devices / 3600.
- Loss/$ (the paper's definition): (loss / token) x (token / s) / ($ / s), where "loss" is the
  training loss of the step at which the cell's cumulative tokens first reach the sweep's
  `loss_token_budget` and "/ token" divides it by that budget. With the budget fixed for a sweep,
  Loss/$ = loss_at_budget x Token/$ / budget: it ranks cells like Token/$ weighted by how far the
  loss still is from zero, so read it next to the loss itself.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """The mean of a few repeats and how far apart they are."""

    mean: float
    std: float  # sample standard deviation (0 for one repeat)
    low: float
    high: float


def spread(values: list[float]) -> Spread:
    if not values:
        raise ValueError("no values to summarise")
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return Spread(statistics.fmean(values), deviation, min(values), max(values))


def window_throughputs(step_seconds: list[float], step_tokens: list[float], warmup: int, steps: int,
                       repeats: int) -> list[float]:
    """Tokens/s of each timed window; `step_seconds[i]` and `step_tokens[i]` are step i's slowest
    rank time and its tokens over every rank. The first `warmup` steps are left out."""
    needed = warmup + steps * repeats
    if len(step_seconds) < needed or len(step_tokens) < needed:
        raise ValueError(f"{len(step_seconds)} steps measured, {needed} needed")
    rates = []
    for repeat in range(repeats):
        start = warmup + repeat * steps
        seconds = sum(step_seconds[start:start + steps])
        rates.append(sum(step_tokens[start:start + steps]) / seconds)
    return rates


def model_flops_utilisation(flops_per_token: float, tokens_per_second: float, peak_flops_per_device: float,
                            world_size: int) -> float:
    """Achieved FLOP/s over the job's peak: per-device peak x world size (tokens/s counts every rank)."""
    return flops_per_token * tokens_per_second / (peak_flops_per_device * world_size)


def dollars_per_second(price_per_hour_per_device: float, world_size: int) -> float:
    return price_per_hour_per_device * world_size / 3600.0


def tokens_per_dollar(tokens_per_second: float, price_per_hour_per_device: float, world_size: int) -> float:
    return tokens_per_second / dollars_per_second(price_per_hour_per_device, world_size)


def loss_per_dollar(loss_at_budget: float, budget_tokens: int, tokens_per_second: float,
                    price_per_hour_per_device: float, world_size: int) -> float:
    """(loss / token) x (token / s) / ($ / s), the loss per token being loss_at_budget / budget."""
    return loss_at_budget / budget_tokens * tokens_per_dollar(tokens_per_second, price_per_hour_per_device, world_size)


def steps_for_budget(budget_tokens: int, tokens_per_step: int) -> int:
    """Optimizer steps until the cumulative tokens first reach the budget (0 without a budget)."""
    return math.ceil(budget_tokens / tokens_per_step) if budget_tokens > 0 else 0
