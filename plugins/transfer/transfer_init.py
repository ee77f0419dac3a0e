"""CatLIP's Transfer Init: downstream classes start from the pretrained head rows of their synsets.

Matching a class name to a WordNet synset (the rule of `plugins.catlip.synsets.SynsetMapper`,
so that downstream names land on the same synsets the pretraining captions did):
  1. lowercase; a "/" separates alternative names ("T-shirt/top" -> "t-shirt", "top");
  2. for each alternative in order: spaces and hyphens become underscores and the whole phrase is
     tried ("ankle_boot"), then, for a phrase of several words, its last word ("boot");
  3. a candidate maps to `lemma.n.01` (lemma = `morphy(candidate, 'n')` or the candidate itself)
     only if that synset exists and is named exactly so; the first candidate that maps wins.
So "ankle boot" -> boot.n.01, "T-shirt/top" -> shirt.n.01 (t_shirt has no synset; its last word
does). The class's row is copied when that synset is in the pretraining vocabulary; otherwise the
row keeps the new head's random weights, with the pretrained head's mean bias (see
`apply_transfer_init`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)
_SEPARATORS = re.compile(r"[\s\-]+")


@dataclass
class ClassMatch:
    """How one downstream class was initialised."""

    index: int  # row of the new head
    name: str  # the downstream class name
    synset: str | None  # the WordNet synset it maps to (None: no candidate has one)
    vocabulary_row: int | None  # that synset's row in the pretrained head (None: not in the vocabulary)

    @property
    def copied(self) -> bool:
        return self.vocabulary_row is not None


def candidate_lemmas(class_name: str) -> list[str]:
    """The names tried for a class, in order (see the module docstring)."""
    candidates: list[str] = []
    for alternative in class_name.lower().split("/"):
        words = [word for word in _SEPARATORS.split(alternative.strip()) if word]
        if not words:
            continue
        for candidate in ("_".join(words), words[-1]):
            if candidate not in candidates:
                candidates.append(candidate)
    return candidates


def match_classes(class_names: Sequence[str], mapper, vocabulary_index: dict[str, int]) -> list[ClassMatch]:
    """Each class's synset (via `mapper.lookup`, a SynsetMapper) and its pretrained vocabulary row."""
    matches = []
    for index, name in enumerate(class_names):
        synset = None
        for candidate in candidate_lemmas(name):
            found = mapper.lookup(candidate)
            if found is not None:
                synset = found[0]
                break
        matches.append(ClassMatch(index, name, synset, vocabulary_index.get(synset) if synset else None))
    return matches


@torch.no_grad()
def apply_transfer_init(head: nn.Linear, pretrained_weight: torch.Tensor, pretrained_bias: torch.Tensor,
                        matches: Sequence[ClassMatch]) -> None:
    """Copy the matched synsets' pretrained rows (weight [V, D], bias [V]) into `head` ([C, D], [C]).

    Unmatched classes keep their random weights, but their bias becomes the mean pretrained bias.
    The pretrained biases sit far below zero (BCE over V mostly absent synsets learns each one's
    log-odds prior), so next to copied rows a random row's bias near 0 would make every
    unmatched class look far likelier than any matched one, and the copied rows would never win
    a softmax at the start. With the mean, an unmatched class starts as "an average synset".
    """
    if not any(match.copied for match in matches):
        return  # nothing to transfer: the head stays entirely random
    head.bias.fill_(pretrained_bias.float().mean())
    for match in matches:
        if match.copied:
            head.weight[match.index].copy_(pretrained_weight[match.vocabulary_row])
            head.bias[match.index].copy_(pretrained_bias[match.vocabulary_row])


def report(matches: Sequence[ClassMatch]) -> dict:
    """A JSON-able summary: which classes were copied from which synset."""
    return {
        "matched": sum(match.copied for match in matches),
        "classes": len(matches),
        "rows": [{**asdict(match), "copied": match.copied} for match in matches],
    }


def log_matches(matches: Sequence[ClassMatch], source: str) -> None:
    copied = [f"{match.name}->{match.synset}" for match in matches if match.copied]
    missed = [match.name + (f" ({match.synset} not in vocabulary)" if match.synset else " (no synset)")
              for match in matches if not match.copied]
    logger.info("Transfer Init from %s: %d of %d classes start from a pretrained synset row: %s; random: %s",
                source, len(copied), len(matches), ", ".join(copied) or "none", ", ".join(missed) or "none")
