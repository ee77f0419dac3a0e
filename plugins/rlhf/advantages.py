"""Advantages for the three RL methods, and the clipped PPO objectives they feed.

    gae    PPO: per-token rewards and a value head's estimates, generalised advantage estimation
           A_t = sum_l (gamma lambda)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t, over each
           response's tokens (V after the last token is 0); returns = A + V
    rloo   REINFORCE leave-one-out over K samples of one prompt: A_i = R_i - mean_{j != i} R_j
    grpo   group-normalised: A_i = (R_i - mean_group R) / (std_group R + eps)

Sequence-level advantages (rloo, grpo) apply to every token of the response. `whiten` normalises
over the real tokens (mask); PPO whitens its advantages, RLOO and GRPO use theirs as they are.

Losses (per real token, averaged over the mask):
    policy  max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)),  ratio = exp(logp - logp_old)
    value   0.5 max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2)
"""

from __future__ import annotations

import torch

METHODS = ("ppo", "rloo", "grpo")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / std over the masked positions; masked-out positions become 0."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean).square(), mask)
    return ((values - mean) * torch.rsqrt(variance + eps)) * mask.to(values.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [B, T] from per-token rewards and values [B, T]; mask [B, T] marks the
    response tokens (a prefix of each row: generation stops at EOS)."""
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # [B]
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def rloo(scores: torch.Tensor, group: int) -> torch.Tensor:
    """Leave-one-out advantages [N] of scores [N] laid out prompt by prompt, `group` samples each."""
    if group < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    grouped = scores.view(-1, group)  # [P, K]
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group - 1)
    return (grouped - others).reshape(-1)


def grpo(scores: torch.Tensor, group: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised advantages [N] of scores [N] laid out prompt by prompt, `group` samples each."""
    if group < 2:
        raise ValueError("GRPO needs at least 2 samples per prompt")
    grouped = scores.view(-1, group)  # [P, K]
    mean, std = grouped.mean(dim=1, keepdim=True), grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped surrogate loss, fraction of tokens clipped), all inputs [B, T]."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss, inputs [B, T]."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns).square(), (clipped - returns).square()), mask)
