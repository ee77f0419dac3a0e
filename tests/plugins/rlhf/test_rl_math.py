"""The RL arithmetic: KL estimators (0 where the models agree, k3 never negative), GAE, RLOO and
GRPO by hand, and each advantage method with KL off converging on a toy bandit's best arm."""

from __future__ import annotations

import pytest
import torch

from plugins.rlhf.advantages import gae, grpo, policy_loss, rloo, value_loss, whiten
from plugins.rlhf.kl import ESTIMATORS, KLControlConfig, KLController, kl_estimate


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_kl_to_an_identical_reference_is_exactly_zero(estimator):
    logprobs = torch.randn(4, 9).clamp_max(0) - 1.0
    assert torch.equal(kl_estimate(logprobs, logprobs.clone(), estimator), torch.zeros(4, 9))


def test_k3_is_never_negative_and_k1_can_be():
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([1e-9, 1e-6, 1e-3, 1.0, 30.0])[:, None]
    policy = torch.randn(5, 10000, generator=generator) * scales
    reference = policy + torch.randn(5, 10000, generator=generator) * scales
    assert (kl_estimate(policy, reference, "k3") >= 0).all()
    assert (kl_estimate(policy, reference, "k2") >= 0).all()
    assert (kl_estimate(policy, reference, "k1") < 0).any()
    log_ratio = torch.tensor([0.5])  # k3 = (r - 1) - log r at r = e^0.5
    assert kl_estimate(torch.zeros(1), log_ratio, "k3").item() == pytest.approx(torch.e ** 0.5 - 1 - 0.5, rel=1e-6)


def test_the_adaptive_coefficient_moves_toward_the_target_and_resumes():
    controller = KLController(KLControlConfig(coef=0.1, target=6.0, horizon=100))
    controller.update(mean_kl=12.0, samples=10)  # error clipped to +0.2
    assert controller.coef == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    restored = KLController(KLControlConfig(coef=0.1, target=6.0, horizon=100))
    restored.load_state_dict(controller.state_dict())
    assert restored.coef == controller.coef
    fixed = KLController(KLControlConfig(coef=0.1))
    fixed.update(mean_kl=100.0, samples=10)
    assert fixed.coef == 0.1


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.25, 0.75], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: deltas 0.25-0.5, 0.75-0.25, 1-0.75 -> A2 = .25, A1 = .5 + .5*.25, A0 = -.25 + .5*A1
    a2, a1 = 0.25, 0.5 + 0.5 * 0.25
    a0 = -0.25 + 0.5 * a1
    # row 1 ends after two tokens (the third value is padding): deltas -0.5, 1.5
    b1 = 2.0 - 0.5
    b0 = 0.5 - 1.0 + 0.5 * b1
    torch.testing.assert_close(advantages, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[a0 + 0.5, a1 + 0.25, a2 + 0.75], [b0 + 1.0, b1 + 0.5, 0.0]]))


def test_rloo_and_grpo_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 3.0, 5.0, 4.0])
    torch.testing.assert_close(rloo(scores, 3), torch.tensor([1.0, -0.5, -0.5, -1.5, 1.5, 0.0]))
    first = torch.tensor([1.0, 0.0, 0.0])
    second = torch.tensor([3.0, 5.0, 4.0])
    expected = torch.cat([(first - first.mean()) / (first.std() + 1e-6), (second - second.mean()) / (second.std() + 1e-6)])
    torch.testing.assert_close(grpo(scores, 3), expected)
    whitened = whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]]))
    torch.testing.assert_close(whitened, torch.tensor([[-1.224744, 0.0, 1.224744, 0.0]]), atol=1e-5, rtol=0)


def bandit_run(method: str, iterations: int = 60, group: int = 8, prompts: int = 2) -> torch.Tensor:
    """A 4-armed bandit with noisy rewards (best arm 2); one-token 'responses', KL off."""
    torch.manual_seed(0)
    means = torch.tensor([0.2, 0.5, 0.8, 0.3])
    logits = torch.zeros(4, requires_grad=True)
    value = torch.zeros(1, requires_grad=True)  # PPO's value head for the single state
    optimizer = torch.optim.Adam([logits, value], lr=0.05)
    for _ in range(iterations):
        with torch.no_grad():
            actions = torch.multinomial(logits.softmax(-1), prompts * group, replacement=True)  # [N]
            scores = means[actions] + 0.1 * torch.randn(actions.shape)
            old_logprobs = logits.log_softmax(-1)[actions][:, None]  # [N, 1]: one token each
            old_values = value.expand(len(actions))[:, None].clone()
        mask = torch.ones(len(actions), 1)
        if method == "ppo":
            advantages, returns = gae(scores[:, None], old_values, mask)
            advantages = whiten(advantages, mask)
        else:
            advantages = (rloo if method == "rloo" else grpo)(scores, group)[:, None]
        for _ in range(2):  # two epochs per batch, as PPO-style methods do
            logprobs = logits.log_softmax(-1)[actions][:, None]
            loss, _ = policy_loss(logprobs, old_logprobs, advantages, mask)
            if method == "ppo":
                loss = loss + 0.1 * value_loss(value.expand(len(actions))[:, None], old_values, returns, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return logits.detach().softmax(-1)


@pytest.mark.parametrize("method", ["ppo", "rloo", "grpo"])
def test_each_advantage_method_finds_the_bandits_best_arm(method):
    probabilities = bandit_run(method)
    assert probabilities.argmax().item() == 2 and probabilities[2] > 0.9, probabilities
