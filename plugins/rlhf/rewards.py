"""Rewards as components (`register_rewards`), the programmatic `math_answer`, and the checked call.

The contract (toolkit.hookspecs.register_rewards): `reward.score(samples) -> N floats` for N
`Sample`s (prompt, generated completion, the data's reference answer).

`math_answer` gives `correct` when the completion's final number equals the reference exactly
(to GSM8K's float tolerance), else `wrong`. The final number is the one after the last "The final
answer is" (the sentence the SFT data and the evaluator's shots end with), or, when the
completion never says it, the last number in it; a completion with no number scores `wrong`.

`score_samples` is how an RL task calls any reward: an exception from the plugin becomes one
line naming the reward and its plugin; a wrong count is an error; non-finite scores are returned
with their positions so the task can skip that step and report it, never train on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from plugins.lm_eval.gsm import extract_answer, is_correct
from toolkit.errors import DataError, ToolkitError

FINAL_ANSWER = "The final answer is"


class RewardError(ToolkitError):
    """A reward plugin failed or answered with the wrong number of scores."""


@dataclass(frozen=True)
class Sample:
    prompt: str
    completion: str
    reference: str | None = None


@runtime_checkable
class Reward(Protocol):
    def score(self, samples: Sequence[Sample]) -> Sequence[float]: ...


@dataclass
class MathAnswerConfig:
    """The reward section for `name: math_answer`."""

    correct: float = 1.0
    wrong: float = 0.0


def final_number(completion: str) -> float | None:
    """The number after the last "The final answer is", else the last number; None if there is none."""
    head, marker, tail = completion.rpartition(FINAL_ANSWER)
    if marker:
        found = extract_answer(tail.split("\n", 1)[0].split(". ", 1)[0])
        if found is not None:
            return found
    return extract_answer(completion)


class MathAnswerReward:
    """`correct` for the exact final number of a math word problem, else `wrong`."""

    def __init__(self, config: MathAnswerConfig | None = None) -> None:
        self.config = config or MathAnswerConfig()

    def score(self, samples: Sequence[Sample]) -> list[float]:
        scores = []
        for index, sample in enumerate(samples):
            if sample.reference is None:
                raise DataError(f"math_answer: sample {index} has no reference answer",
                                hint="the prompts' data needs a 'reference' field")
            gold = extract_answer(str(sample.reference))
            if gold is None:
                raise DataError(f"math_answer: reference {sample.reference!r} of sample {index} is not a number")
            correct = is_correct(final_number(sample.completion), gold)
            scores.append(self.config.correct if correct else self.config.wrong)
        return scores


def build_math_answer(config: MathAnswerConfig | None) -> MathAnswerReward:
    return MathAnswerReward(config)


@dataclass
class Scores:
    """What a reward said about N samples: values [N] (float32; non-finite ones kept as they were)."""

    values: torch.Tensor
    bad: list[int] = field(default_factory=list)  # positions whose score is NaN or infinite

    @property
    def finite(self) -> bool:
        return not self.bad


def score_samples(name: str, plugin: str, reward: Any, samples: Sequence[Sample]) -> Scores:
    """`reward.score(samples)`, checked (see the module docstring)."""
    try:
        values = [float(value) for value in reward.score(samples)]
    except ToolkitError as error:
        raise RewardError(f"reward '{name}' (plugin '{plugin}') failed: {error.one_line()}") from error
    except Exception as error:  # someone else's code: name it, in one line
        message = " ".join(f"{type(error).__name__}: {error}".split())
        raise RewardError(f"reward '{name}' (plugin '{plugin}') failed: {message}") from error
    if len(values) != len(samples):
        raise RewardError(f"reward '{name}' (plugin '{plugin}') returned {len(values)} scores for "
                          f"{len(samples)} samples")
    bad = [index for index, value in enumerate(values) if not math.isfinite(value)]
    return Scores(torch.tensor(values, dtype=torch.float32), bad)
