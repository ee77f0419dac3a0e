"""Captions -> WordNet synsets -> a frequency vocabulary -> multi-hot labels (CatLIP's labels).

A word is lowercased and lemmatised as CoreNet's CatLIP labelling does it (nltk's
`WordNetLemmatizer().lemmatize(word)`: part of speech noun, the shortest of all the base forms
WordNet's morphology finds, the word itself when there is none), and kept if `lemma.n.01` exists
and is named exactly so (no POS filter, as in CatLIP); a word with no such synset gives no label.
Taking the shortest form matters: `morphy` alone returns the first candidate, which keeps a plural
that is itself a lemma ("hands" -> hands.n.01, guardianship) where CatLIP gets hand.n.01.
Lookups are memoised per word.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from toolkit.errors import DataError

_WORD = re.compile(r"[a-z]+")
# Bump when the caption -> synset procedure changes: cached vocabularies and mined labels carry it
# in their cache key, so files built by an older procedure are never reused.
LABELING_VERSION = "2"


def lemmatize_noun(wordnet, word: str) -> str:
    """The base form nltk's `WordNetLemmatizer.lemmatize(word)` gives (pos "n"): the shortest
    candidate of WordNet's morphology (the first one among equally short), else the word."""
    candidates = wordnet._morphy(word, "n")  # every base form, exceptions list included
    return min(candidates, key=len) if candidates else word


class SynsetMapper:
    """caption -> ordered unique synset names, with a per-word memo."""

    def __init__(self, wordnet) -> None:
        self.wordnet = wordnet
        self._memo: dict[str, tuple[str, int, str] | None] = {}

    def lookup(self, word: str) -> tuple[str, int, str] | None:
        """(synset name, offset, lemma) for a word, or None."""
        if word not in self._memo:
            lemma = lemmatize_noun(self.wordnet, word)
            name = f"{lemma}.n.01"
            found = None
            try:
                synset = self.wordnet.synset(name)
                if synset.name() == name:
                    found = (name, synset.offset(), lemma)
            except Exception:  # nltk raises WordNetError / ValueError for unknown names
                found = None
            self._memo[word] = found
        return self._memo[word]

    def synsets(self, caption: str) -> list[tuple[str, int, str]]:
        seen, result = set(), []
        for word in _WORD.findall(caption.lower()):
            entry = self.lookup(word)
            if entry is not None and entry[0] not in seen:
                seen.add(entry[0])
                result.append(entry)
        return result


class SynsetVocabulary:
    """The kept synsets, in order of decreasing count; index = class id."""

    def __init__(self, entries: list[dict]) -> None:
        self.entries = entries
        self.index = {entry["synset"]: position for position, entry in enumerate(entries)}
        self.empty_captions = 0  # captions whose label came out all-zero

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def build(cls, captions: Iterable[str], mapper: SynsetMapper, min_count: int = 1,
              top_k: int | None = None) -> "SynsetVocabulary":
        counts: Counter = Counter()
        info: dict[str, tuple[int, str]] = {}
        for caption in captions:
            for name, offset, lemma in mapper.synsets(caption):
                counts[name] += 1
                info.setdefault(name, (offset, lemma))
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda item: (-item[1], item[0]))
        if top_k is not None:
            ranked = ranked[:top_k]
        return cls([{"synset": name, "offset": info[name][0], "count": count, "lemma": info[name][1]}
                    for name, count in ranked])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.entries, indent=1))

    @classmethod
    def load(cls, path: str | Path, expected_size: int | None = None) -> "SynsetVocabulary":
        vocabulary = cls(json.loads(Path(path).read_text()))
        if expected_size is not None and len(vocabulary) != expected_size:
            raise DataError(f"synset vocabulary {path} has {len(vocabulary)} classes but the model head has {expected_size}",
                            hint="rebuild the vocabulary or set model.num_classes to its size")
        return vocabulary

    def label_indices(self, caption: str, mapper: SynsetMapper) -> list[int]:
        indices = [self.index[name] for name, _, _ in mapper.synsets(caption) if name in self.index]
        if not indices:
            self.empty_captions += 1
        return indices

    def labels(self, caption: str, mapper: SynsetMapper) -> torch.Tensor:
        target = torch.zeros(len(self))  # [C]
        target[self.label_indices(caption, mapper)] = 1.0
        return target

    def mine_labels(self, captions: Iterable[str], mapper: SynsetMapper) -> list[list[int]]:
        return [self.label_indices(caption, mapper) for caption in captions]
