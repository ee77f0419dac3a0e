"""The `rl` task: PPO, RLOO or GRPO on the engine's custom-loop services, with a pluggable KL reference.

Models (the recipe's `models:`; `source:` starts each from a run, a soup included):
    policy     trained: samples the responses and is updated
    sft        frozen: the SFT model; KL to it is always logged
    reference  frozen, only with `task.reference: model`: the KL penalty's reference (a soup for
               SALSA, any checkpoint of the policy's architecture). `reference: sft` uses the sft
               model (classic PPO), `none` applies no penalty (KL to the SFT model still logged)
    value      trained, PPO only: a `reward_openelm` model whose per-token scores are the values
The policy's start (SFT run or soup) and the reference are chosen apart, so both readings of
SALSA run from recipes.

One trainer step = one rollout batch: B prompts from the data, each sampled K times with the KV
cache (temperature), scored by the reward plugin; per-token KL to the reference (k1/k2/k3, fixed
or adaptive coefficient) is subtracted from the reward (PPO: per token, score at the last token;
RLOO/GRPO: summed into the sequence score); advantages by GAE over a value head (whitened), by
leave-one-out, or group-normalised; then `epochs` passes of `minibatches` clipped updates. A
non-finite reward skips the step's updates and is reported (`reward_nonfinite`).

Logged each step: reward, kl_ref and kl_sft (per-sequence sums), kl_coef, response_tokens and
the time split generate_s / score_s / update_s, score_s itself split into score_reward_s,
score_policy_s, score_reference_s (SFT model and reference) and score_value_s (value and advantages). Single process (the document-masked forward
needs the plain models). The KL coefficient is the task's own checkpointed state
(`task_state.json`, toolkit.capabilities.TaskState), so runs resume bit-exactly, adaptive
coefficient included.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from plugins.lm.tokenizer import load_tokenizer
from plugins.rlhf import advantages as adv
from plugins.rlhf.chat import chat_template
from plugins.rlhf.kl import ESTIMATORS, KLControlConfig, KLController, kl_estimate
from plugins.rlhf.rewards import Sample, score_samples
from plugins.rlhf.rollout import Rollout, encode_prompts, response_logprobs, sample
from toolkit.config import build_config
from toolkit.errors import RecipeError, TrainingError
from toolkit.task import Role, StepOutput

REFERENCES = ("sft", "model", "none")


@dataclass
class RLConfig:
    """The `task:` section for `name: rl`."""

    method: str = "ppo"  # ppo | rloo | grpo
    reference: str = "sft"  # sft | model | none
    tokenizer: str = ""  # the policy's SentencePiece .model (usually ${data.tokenizer} of the SFT run)
    template: str = "gsm"  # chat template the prompts are rendered with
    reward: str = "math_answer"  # a registered reward
    reward_options: dict[str, Any] = field(default_factory=dict)
    samples_per_prompt: int = 4  # K
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    kl_estimator: str = "k1"
    kl_coef: float = 0.05
    kl_target: float = 0.0  # > 0: adaptive coefficient toward this per-sequence KL
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True  # PPO only (RLOO and GRPO use their advantages as they are)
    epochs: int = 4
    minibatches: int = 1

    def __post_init__(self) -> None:
        if self.method not in adv.METHODS:
            raise ValueError(f"method must be one of {', '.join(adv.METHODS)}, got '{self.method}'")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got '{self.reference}'")
        if self.kl_estimator not in ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(ESTIMATORS)}, got '{self.kl_estimator}'")
        if self.method != "ppo" and self.samples_per_prompt < 2:
            raise ValueError(f"{self.method} needs samples_per_prompt >= 2, got {self.samples_per_prompt}")
        if min(self.samples_per_prompt, self.max_new_tokens, self.epochs, self.minibatches) < 1:
            raise ValueError("samples_per_prompt, max_new_tokens, epochs and minibatches must be >= 1")


def build_reward(name: str, options: dict[str, Any]) -> tuple[Any, str]:
    from toolkit.plugins import get_registries

    component = get_registries()["rewards"].get(name)
    config = build_config(component.config_class, dict(options), "task.reward_options") if component.config_class else None
    return component.factory(config), component.plugin


def config_differences(policy: nn.Module, other: nn.Module) -> list[str]:
    mine, theirs = getattr(policy, "config", None), getattr(other, "config", None)
    if type(policy) is not type(other) or not dataclasses.is_dataclass(mine) or type(mine) is not type(theirs):
        return ["model type"]
    first, second = dataclasses.asdict(mine), dataclasses.asdict(theirs)
    return sorted(key for key in first if first[key] != second.get(key))


class RLTask:
    item_unit = "tokens"

    def __init__(self, config: RLConfig | None = None, loss: Any = None) -> None:
        if loss is not None:
            raise RecipeError("task 'rl' computes its own losses; remove the recipe's 'loss:' section")
        self.config = config = config or RLConfig()
        if not config.tokenizer:
            raise RecipeError("task.tokenizer: the rl task needs the policy's tokenizer file",
                              hint="e.g. task.tokenizer: ${data.tokenizer} or runs/sft-a/tokenizer.model")
        self.tokenizer = load_tokenizer(config.tokenizer)
        self.template = chat_template(config.template)
        self.reward, self.reward_plugin = build_reward(config.reward, config.reward_options)
        roles = {"policy": Role.trained, "sft": Role.frozen}
        if config.reference == "model":
            roles["reference"] = Role.frozen
        if config.method == "ppo":
            roles["value"] = Role.trained
        self.model_roles = roles
        self.kl = KLController(KLControlConfig(config.kl_coef, config.kl_target, config.kl_horizon))
        self._checked = False

    # -- the pieces of one step ---------------------------------------------------------------------

    def _check_models(self, models: Mapping[str, nn.Module]) -> None:
        """A reference or SFT model must be the policy's architecture and vocabulary: one line if not."""
        for name in ("sft", "reference"):
            if name in models:
                differences = config_differences(models["policy"], models[name])
                if differences:
                    raise TrainingError(f"models.{name}: not the policy's architecture (differs in "
                                        f"{', '.join(differences)}); a KL reference must score the same tokens")
        self._checked = True

    def _rollout(self, models: Mapping[str, nn.Module], batch: dict[str, list[str]], samples: int,
                 temperature: float) -> tuple[Rollout, list[str | None]]:
        prompts = [prompt for prompt in batch["prompt"] for _ in range(samples)]
        references = [reference for reference in batch.get("reference", [None] * len(batch["prompt"]))
                      for _ in range(samples)]
        rollout = sample(models["policy"], self.tokenizer, encode_prompts(self.tokenizer, self.template, prompts),
                         self.config.max_new_tokens, temperature, self.config.top_k)
        return rollout, references

    def _scores(self, batch_prompts: list[str], rollout: Rollout, references: list[Any]):
        samples = [Sample(prompt, completion, reference) for prompt, completion, reference in
                   zip(batch_prompts, rollout.completions, references)]
        return score_samples(self.config.reward, self.reward_plugin, self.reward, samples)

    @torch.no_grad()
    def _advantages(self, models: Mapping[str, nn.Module], rollout: Rollout, scores: torch.Tensor,
                    old_logprobs: torch.Tensor, kl_ref: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config, mask = self.config, rollout.response_mask.float()
        extra: dict[str, torch.Tensor] = {}
        penalty = self.kl.coef * kl_ref * mask  # [N, T]
        if config.method == "ppo":
            rewards = -penalty
            rewards[torch.arange(len(scores)), rollout.last_index] += scores.to(rewards.device)
            values = self._values(models["value"], rollout)
            advantages, returns = adv.gae(rewards, values, mask, config.gamma, config.lam)
            if config.whiten_advantages:
                advantages = adv.whiten(advantages, mask)
            extra = {"old_values": values, "returns": returns}
        else:
            sequence_scores = scores.to(mask.device) - penalty.sum(dim=1)  # [N]
            method = adv.rloo if config.method == "rloo" else adv.grpo
            advantages = method(sequence_scores, config.samples_per_prompt)[:, None] * mask
        return advantages, extra

    @staticmethod
    def _values(value_model: nn.Module, rollout: Rollout) -> torch.Tensor:
        """V of the state before each response token [N, T]."""
        all_values = value_model(rollout.sequences, document_ids=rollout.documents)  # [N, W + T]
        return all_values[:, rollout.prompt_width - 1:-1]

    def _update(self, context, rollout: Rollout, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                extra: dict[str, torch.Tensor]) -> None:
        config = self.config
        rows = rollout.sequences.shape[0]
        for _ in range(config.epochs):
            order = torch.randperm(rows)  # from torch's RNG, which checkpoints restore
            for group in order.chunk(min(config.minibatches, rows)):
                part = rollout.rows(group)
                index = group.to(old_logprobs.device)
                mask = part.response_mask.float()
                for _ in context.micro_steps(1):
                    with context.autocast():
                        logprobs = response_logprobs(context.models["policy"], part)
                        loss, clipped = adv.policy_loss(logprobs, old_logprobs[index], advantages[index], mask, config.clip)
                        metrics = {"policy_loss": loss.detach(), "clip_fraction": clipped}
                        if config.method == "ppo":
                            values = self._values(context.models["value"], part)
                            value_loss = adv.value_loss(values, extra["old_values"][index], extra["returns"][index],
                                                        mask, config.value_clip)
                            loss = loss + config.vf_coef * value_loss
                            metrics["value_loss"] = value_loss.detach()
                    context.backward(StepOutput(loss=loss, items=int(mask.sum().item()),
                                                sequence_length=part.sequences.shape[1], metrics=metrics))
                context.optimizer_step()

    # -- the engine's entry points ------------------------------------------------------------------

    def train_step(self, context) -> None:
        """toolkit.capabilities.CustomLoop: one rollout batch, scored, then the clipped updates."""
        models, config = context.models, self.config
        if not self._checked:
            self._check_models(models)
        batch = context.next_batch()
        laps = Laps()
        rollout, references = self._rollout(models, batch, config.samples_per_prompt, config.temperature)
        laps.mark("generate_s")
        prompts = [prompt for prompt in batch["prompt"] for _ in range(config.samples_per_prompt)]
        scores = self._scores(prompts, rollout, references)
        laps.mark("score_reward_s")
        mask = rollout.response_mask.float()
        # Scored under the same autocast as the updates, so the first update's ratio is exactly 1.
        with torch.no_grad(), context.autocast():
            old_logprobs = response_logprobs(models["policy"], rollout)  # [N, T]
            laps.mark("score_policy_s")
            sft_logprobs = response_logprobs(models["sft"], rollout)
            kl_sft = kl_estimate(old_logprobs, sft_logprobs, config.kl_estimator) * mask
            if config.reference == "none":
                kl_ref = torch.zeros_like(kl_sft)
            elif config.reference == "sft":
                kl_ref = kl_sft
            else:
                kl_ref = kl_estimate(old_logprobs, response_logprobs(models["reference"], rollout),
                                     config.kl_estimator) * mask
            laps.mark("score_reference_s")  # the SFT model and the reference (one model when they coincide)
        logged = {"kl_sft": kl_sft.sum(dim=1).mean().item(), "kl_coef": self.kl.coef,
                  "response_tokens": mask.sum(dim=1).mean().item()}
        if config.reference != "none":
            logged["kl_ref"] = kl_ref.sum(dim=1).mean().item()
        if not scores.finite:
            print(f"warning: step {context.step + 1}: reward '{config.reward}' gave non-finite scores for samples "
                  f"{scores.bad}; the step is skipped, nothing trained on it", file=sys.stderr)
            context.log(reward_nonfinite=len(scores.bad), **logged, **laps.seconds, score_s=laps.total("score_"))
            context.optimizer_step()  # no gradients: no parameter moves, the schedule still advances
            return
        with context.autocast():
            advantages, extra = self._advantages(models, rollout, scores.values, old_logprobs, kl_ref)
        laps.mark("score_value_s")  # the value model's forward (PPO) and the advantages
        self._update(context, rollout, old_logprobs, advantages, extra)
        self.kl.update(logged.get("kl_ref", 0.0), len(scores.values))
        laps.mark("update_s")
        context.log(reward=scores.values.mean().item(), **logged, **laps.seconds, score_s=laps.total("score_"))

    def task_state_dict(self) -> dict[str, Any]:
        """toolkit.capabilities.TaskState: the KL controller (its adapted coefficient)."""
        return {"kl_controller": self.kl.state_dict()}

    def load_task_state_dict(self, state: dict[str, Any]) -> None:
        self.kl.load_state_dict(state["kl_controller"])

    def training_step(self, models: Mapping[str, nn.Module], batch: Any) -> StepOutput:
        raise TrainingError("task 'rl' runs its own loop (train_step); training_step is not used")

    @torch.no_grad()
    def validation_step(self, models: Mapping[str, nn.Module], batch: dict[str, list[str]]) -> StepOutput:
        """Greedy responses to the validation prompts; the loss is minus the mean reward."""
        rollout, references = self._rollout(models, batch, 1, temperature=0.0)
        scores = self._scores(batch["prompt"], rollout, references)
        values = torch.nan_to_num(scores.values, nan=0.0, posinf=0.0, neginf=0.0)
        return StepOutput(loss=-values.mean(), items=len(values), metrics={"reward": values.mean()})


class Laps:
    """Wall-clock seconds between marks: the step-time split the task logs."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    def total(self, prefix: str) -> float:
        return sum(value for name, value in self.seconds.items() if name.startswith(prefix))


def build_rl(config: RLConfig | None, loss: Any) -> RLTask:
    return RLTask(config, loss)
