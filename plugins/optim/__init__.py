"""First-party optimizers and learning-rate schedules: AdamW with decoupled decay groups, cosine, constant."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from toolkit import hookimpl
from toolkit.config import InvalidField


def at_least_zero(config: object, *names: str) -> None:
    """The recipe check every non-negative field shares; runs when the recipe loads (`--dry-run` too)."""
    for name in names:
        if getattr(config, name) < 0:
            raise InvalidField(name, f"must be >= 0, got {getattr(config, name)}")


@dataclass
class AdamWConfig:
    lr: float = 1e-3  # peak learning rate (the schedule scales it)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # decay rates of the two moment averages
    eps: float = 1e-8  # added to the second moment's square root
    weight_decay: float = 0.0  # decoupled decay, on weight matrices only
    # torch's fused single-kernel AdamW; null = use it wherever it runs (plain CPU or CUDA
    # tensors: about 3x the for-each default's speed on CPU, docs/BENCHMARKS.md), for-each elsewhere.
    fused: bool | None = None

    def __post_init__(self) -> None:
        at_least_zero(self, "lr", "eps", "weight_decay")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise InvalidField("betas", f"expected two numbers in [0, 1), got {list(self.betas)}")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups: weight decay on matrices only, none on norms, biases and embeddings.

    Embedding tables are excluded (as in OpenELM and most LM recipes) because decay pulls rare
    tokens' rows to zero. A weight tied to an embedding is the same tensor, so it is excluded too.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            no_decay_ids.add(id(module.weight))
    decay, no_decay = [], []
    seen: set[int] = set()
    for parameter in model.parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if parameter.ndim < 2 or id(parameter) in no_decay_ids:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_adamw(config: AdamWConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        decay_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(config.betas[0], config.betas[1]),
        eps=config.eps,
        fused=fused_supported(model) if config.fused is None else config.fused,
    )


def fused_supported(model: nn.Module) -> bool:
    """Whether the fused AdamW kernel can take every parameter: plain (not FSDP2 DTensor) CPU or
    CUDA floating-point tensors."""
    from torch.distributed.tensor import DTensor

    parameters = [p for p in model.parameters() if p.requires_grad]
    return bool(parameters) and all(
        not isinstance(p, DTensor) and p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters
    )


@dataclass
class CosineConfig:
    warmup_steps: int = 0
    warmup_init_lr: float = 0.0  # absolute lr at step 0 of the warmup
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak
    total_steps: int = 0  # 0 = the trainer's max_steps

    def __post_init__(self) -> None:
        at_least_zero(self, "warmup_steps", "warmup_init_lr", "total_steps")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InvalidField("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")


def cosine_factor(step: int, peak_lr: float, config: CosineConfig, total_steps: int) -> float:
    """Multiplier of the peak lr at `step`: linear warmup from warmup_init_lr, then cosine decay."""
    if step < config.warmup_steps:
        start = config.warmup_init_lr / peak_lr if peak_lr > 0 else 0.0
        return start + (1.0 - start) * step / config.warmup_steps
    decay_steps = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def build_cosine(config: CosineConfig, optimizer: torch.optim.Optimizer, max_steps: int):
    total = config.total_steps or max_steps
    peaks = [group["lr"] for group in optimizer.param_groups]
    lambdas = [lambda step, peak=peak: cosine_factor(step, peak, config, total) for peak in peaks]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


@dataclass
class ConstantConfig:
    warmup_steps: int = 0  # steps of linear warmup to the optimizer's lr

    def __post_init__(self) -> None:
        at_least_zero(self, "warmup_steps")


def build_constant(config: ConstantConfig, optimizer: torch.optim.Optimizer, max_steps: int):
    warmup = config.warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )


@hookimpl
def register_optimizers(register):
    register("adamw", build_adamw, config=AdamWConfig)


@hookimpl
def register_schedulers(register):
    register("cosine", build_cosine, config=CosineConfig)
    register("constant", build_constant, config=ConstantConfig)
