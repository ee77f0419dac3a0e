"""Per-token KL estimates between the policy and a reference, and the KL coefficient's controllers.

With the sample drawn from the policy and log r = log p_ref(token) - log p_policy(token):
    k1 = -log r                 unbiased for KL(policy || ref), but single samples can be negative
    k2 = (log r)^2 / 2          biased, never negative, low variance
    k3 = (r - 1) - log r        unbiased and never negative (x - 1 - log x >= 0 for x > 0)
(Schulman's "Approximating KL divergence" note; TRL and OpenRLHF offer the same three.) All three
are exactly 0 where the two models agree. k3 is computed as expm1(log r) - log r, accurate for
small log r, and clamped at 0 against the last bit of rounding.

The coefficient is fixed, or adaptive (Ziegler et al., 2019): after each rollout batch with mean
KL `kl`, coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * batch / horizon, pushing the KL toward
`target`. The coefficient is part of the checkpoint: the rl task saves this state_dict as its own
state (`task_state.json`), so an adaptive run resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate [...] from the sampled tokens' log-probabilities under each model [...]."""
    log_ratio = reference_logprobs.float() - policy_logprobs.float()  # log r
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return (torch.expm1(log_ratio) - log_ratio).clamp_min(0.0)
    raise ValueError(f"unknown KL estimator '{estimator}'; known: {', '.join(ESTIMATORS)}")


@dataclass
class KLControlConfig:
    coef: float = 0.05  # the starting (or fixed) coefficient
    target: float = 0.0  # > 0: adaptive toward this mean KL per sequence; 0: fixed
    horizon: int = 10000  # samples over which the adaptive controller moves by its full step


class KLController:
    """The KL coefficient: fixed, or adapted toward a target after every rollout batch."""

    def __init__(self, config: KLControlConfig) -> None:
        if config.coef < 0 or config.target < 0 or config.horizon < 1:
            raise ValueError(f"KL control needs coef >= 0, target >= 0 and horizon >= 1, got {config}")
        self.config = config
        self.coef = config.coef

    def update(self, mean_kl: float, samples: int) -> None:
        if self.config.target <= 0:
            return
        error = min(max(mean_kl / self.config.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * samples / self.config.horizon

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef = float(state["coef"])
