"""Counting the inputs that did not fit a model's context, so an evaluation can say so once.

A prompt longer than the context cannot be read whole: the
toolkit's models read only its last `context` tokens, a Hugging Face model's positions run past
what it was trained on. Either way the scores no longer measure the model on the task as asked,
and the user must hear it. The loaded models count such inputs here; `toolkit.evaluation` asks for
`truncation_report()` after the evaluator ran and prints it once, with the counts, as a warning
(and keeps it in results.json's notes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ContextOverflow:
    """How many of the inputs seen were longer than the context, and the longest."""

    context_length: int
    consequence: str  # what happened to such an input, for the message
    seen: int = 0
    over: int = 0
    longest: int = 0

    def record(self, length: int) -> None:
        """One input of `length` tokens (a prompt to continue, or a context and continuation to score)."""
        self.seen += 1
        if length > self.context_length:
            self.over += 1
            self.longest = max(self.longest, length)

    def report(self) -> str | None:
        if not self.over:
            return None
        return (f"{self.over} of {self.seen} prompts are longer than the model's context of {self.context_length} "
                f"tokens (the longest has {self.longest}): {self.consequence}")


class CountsContextOverflow:
    """Mixin for loaded models: `_record_length` per input, `truncation_report()` for the evaluation.

    The class sets `overflow_consequence` and has `context_length`; the counter is made on first use."""

    overflow_consequence = "the model read only the last part of each"
    context_length: int

    def _record_length(self, length: int) -> None:
        if getattr(self, "_overflow", None) is None:
            self._overflow = ContextOverflow(self.context_length, self.overflow_consequence)
        self._overflow.record(length)

    def truncation_report(self) -> str | None:
        """How many inputs were longer than the context, if any (toolkit.evaluation warns with it)."""
        overflow = getattr(self, "_overflow", None)
        return overflow.report() if overflow is not None else None
