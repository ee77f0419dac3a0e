"""The synset vocabulary of a set of shards, and each shard's mined labels, both cached on disk.

Mining labels means WordNet lookups for every caption word; that work is done once per
(shard, vocabulary) and kept as a small JSON file of class indices per sample, so later epochs and
later runs do no WordNet work at all (WordNet is not even loaded when every cache entry exists).
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from pathlib import Path

from plugins.catlip.shards import ShardIndex, shard_identity
from plugins.catlip.synsets import LABELING_VERSION, SynsetMapper, SynsetVocabulary
from toolkit.data.cache import build_once, hash_file, hash_strings
from toolkit.errors import DataError

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def shared_mapper() -> SynsetMapper:
    """One WordNet reader and word memo per process (loading WordNet takes seconds)."""
    from plugins.catlip.wordnet import load_wordnet

    return SynsetMapper(load_wordnet())


def build_vocabulary(indexes: list[ShardIndex], min_count: int = 1, top_k: int | None = None,
                     mapper: SynsetMapper | None = None) -> SynsetVocabulary:
    captions = (caption for index in indexes for caption in index.captions)
    return SynsetVocabulary.build(captions, mapper or shared_mapper(), min_count=min_count, top_k=top_k)


def cached_vocabulary(indexes: list[ShardIndex], min_count: int, top_k: int | None, cache_dir: Path) -> Path:
    """The vocabulary JSON of these shards and thresholds, built once into cache_dir/synsets/."""
    key = hash_strings([*(shard_identity(index.path) for index in indexes), str(min_count), str(top_k),
                        f"labeling-{LABELING_VERSION}"])
    target = cache_dir / "synsets" / f"vocabulary-{key}.json"

    def build(temporary: Path) -> None:
        vocabulary = build_vocabulary(indexes, min_count, top_k)
        if len(vocabulary) == 0:
            raise DataError(f"no caption word of the {sum(map(len, indexes))} training samples maps to a WordNet "
                            f"synset with count >= {min_count}", hint="check the captions, or lower data.min_count")
        vocabulary.save(temporary)
        logger.info("synset vocabulary: %d synsets from %d shards", len(vocabulary), len(indexes))

    return build_once(target, build)


def vocabulary_key(path: Path) -> str:
    return hash_file(path).hexdigest()[:16]


def cached_labels(index: ShardIndex, vocabulary: SynsetVocabulary, vocabulary_path: Path,
                  cache_dir: Path) -> list[list[int]]:
    """Class indices of every sample of the shard (empty list: no synset in the caption)."""
    name = f"{index.path.stem}-{shard_identity(index.path)}-{vocabulary_key(vocabulary_path)}-l{LABELING_VERSION}.json"
    target = cache_dir / "labels" / name  # the labeling version: a user's vocabulary file may outlive a procedure change

    def build(temporary: Path) -> None:
        mapper = shared_mapper()
        temporary.write_text(json.dumps([vocabulary.label_indices(caption, mapper) for caption in index.captions]))

    built = build_once(target, build)
    try:
        labels = json.loads(built.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{built}: unreadable label cache ({error})", hint="delete it to rebuild") from error
    if len(labels) != len(index):
        raise DataError(f"{built}: label cache holds {len(labels)} samples but {index.path} has {len(index)}",
                        hint="delete the cache file to rebuild it")
    return labels


def load_vocabulary(path: Path) -> SynsetVocabulary:
    try:
        return SynsetVocabulary.load(path)
    except FileNotFoundError as error:
        raise DataError(f"{path}: synset vocabulary file not found",
                        hint="build one with toolkit-catlip-vocab, or set data.vocabulary: '' to build it") from error
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a synset vocabulary JSON ({error})".splitlines()[0]) from error


def frequency_baseline(train_labels: list[list[int]], val_labels: list[list[int]], num_classes: int) -> float:
    """CatLIP's loss (BCE summed over classes, mean over samples) of always predicting each
    class's training frequency: the figure a model that ignores the image reaches at best."""
    counts = [0] * num_classes
    for row in train_labels:
        for label in row:
            counts[label] += 1
    total = max(1, len(train_labels))
    epsilon = 1e-7
    probabilities = [min(max(count / total, epsilon), 1 - epsilon) for count in counts]
    everything_negative = -sum(math.log(1 - p) for p in probabilities)  # the loss if no label were set
    loss = 0.0
    for row in val_labels:
        loss += everything_negative + sum(math.log(1 - probabilities[c]) - math.log(probabilities[c]) for c in row)
    return loss / max(1, len(val_labels))
