"""The `cross_entropy` loss for language models: mean token cross-entropy plus optional z-loss.

total = mean over target tokens of (logsumexp(logits) - logit[target])
        + z_loss * mean over target tokens of logsumexp(logits)^2      (PaLM's z-loss)

Both terms come from one logsumexp over the vocabulary, computed in fp32 even under bf16
autocast (low precision log-sum-exp over 32k logits loses the small differences the loss is made
of). Memory: one fp32 copy of the logits (none when they already are fp32) kept for backward, no
separate log-softmax tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.config import InvalidField


@dataclass
class CrossEntropyConfig:
    """The `loss:` section for `name: cross_entropy`."""

    z_loss: float = 0.0  # weight of mean(logsumexp^2); PaLM used 1e-4
    ignore_index: int = -100  # label value that contributes nothing (padding)

    def __post_init__(self) -> None:
        if self.z_loss < 0:
            raise InvalidField("z_loss", f"must be >= 0, got {self.z_loss}")


@dataclass
class LossTerms:
    """The loss and its parts for one batch. `tokens` counts the targets that were not ignored."""

    total: torch.Tensor  # scalar, differentiable
    cross_entropy: torch.Tensor  # scalar, differentiable
    z_loss: torch.Tensor | None  # scalar (unweighted mean logsumexp^2) when z_loss > 0
    tokens: torch.Tensor  # scalar integer tensor


class CrossEntropyLoss(nn.Module):
    """`loss(logits [..., V], labels [...]) -> scalar`; `terms(...)` gives the parts for logging."""

    def __init__(self, config: CrossEntropyConfig | None = None) -> None:
        super().__init__()
        self.config = config or CrossEntropyConfig()

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        vocab = logits.shape[-1]
        flat_logits = logits.reshape(-1, vocab)  # [N, V]
        flat_labels = labels.reshape(-1)  # [N]
        with torch.autocast(device_type=flat_logits.device.type, enabled=False):
            flat_logits = flat_logits.float()  # no copy when already fp32
            log_normalizer = torch.logsumexp(flat_logits, dim=-1)  # [N]
            keep = flat_labels != self.config.ignore_index  # [N]
            safe_labels = torch.where(keep, flat_labels, torch.zeros_like(flat_labels))  # gather needs a valid id
            target_logits = flat_logits.gather(1, safe_labels.unsqueeze(1)).squeeze(1)  # [N]
            weights = keep.to(flat_logits.dtype)  # [N]
            tokens = keep.sum()
            # An all-padding batch (possible at the end of validation) gives 0 loss, not NaN.
            denominator = tokens.clamp(min=1).to(flat_logits.dtype)
            cross_entropy = ((log_normalizer - target_logits) * weights).sum() / denominator
            total = cross_entropy
            z_term = None
            if self.config.z_loss > 0:
                z_term = (log_normalizer.square() * weights).sum() / denominator
                total = cross_entropy + self.config.z_loss * z_term
        return LossTerms(total=total, cross_entropy=cross_entropy, z_loss=z_term, tokens=tokens)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.terms(logits, labels).total

    def extra_repr(self) -> str:
        return f"z_loss={self.config.z_loss}, ignore_index={self.config.ignore_index}"


def build_cross_entropy(config: CrossEntropyConfig | None) -> CrossEntropyLoss:
    return CrossEntropyLoss(config)
