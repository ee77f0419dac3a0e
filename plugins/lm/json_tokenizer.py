"""Hugging Face `tokenizer.json` tokenizers (byte-level BPE and the like) behind the toolkit's tokenizer interface.

`load_tokenizer` (tokenizer.py) hands a `.json` file here; everything that reads a tokenizer
(datasets, RLHF rows, generation, evaluators) then sees the same `path`, `vocab_size`, `eos_id`,
`bos_id`, `encode`, `encode_batch`, `decode` and `run_files` as for a SentencePiece model.

Conventions, chosen to match the SentencePiece path: `encode` adds no special tokens (the data
code places the end-of-sequence ids itself), special tokens written in the text (`<|im_start|>`)
become their single ids, and `decode` drops special tokens. The end-of-sequence token is the
`eos_token` of a `tokenizer_config.json` beside the file (what transformers' `save_pretrained`
writes, so an instruct model keeps its own end of turn), else the first of the usual spellings
the vocabulary holds. A run keeps both files, so it decides the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.lm.tokenizer_files import JSON_CONFIG_FILE as TOKENIZER_CONFIG_FILE
from plugins.lm.tokenizer_files import tokenizer_run_files
from toolkit.errors import DataError

# End-of-sequence spellings tried, in order, when no tokenizer_config.json names one.
USUAL_EOS_TOKENS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")


@dataclass
class JsonTokenizer:
    """A loaded `tokenizers.Tokenizer`, the file it came from and its end/begin-of-sequence ids."""

    path: Path
    backend: Any  # tokenizers.Tokenizer (imported lazily)
    eos_id: int
    bos_id: int

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        # tokenizers parallelises batches itself (RAYON_NUM_THREADS); num_threads is SentencePiece's knob.
        return [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def run_files(self) -> dict[str, Path]:
        """The files a run directory keeps of this tokenizer (name there -> file)."""
        return tokenizer_run_files(self.path)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(path: Path) -> dict[str, str]:
    """eos_token / bos_token of the tokenizer_config.json beside `path` (empty when there is none)."""
    config_path = path.with_name(TOKENIZER_CONFIG_FILE)
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{config_path}: not a readable JSON file ({error})".splitlines()[0]) from error
    if not isinstance(config, dict):
        raise DataError(f"{config_path}: not a JSON object")
    found = {}
    for key in ("eos_token", "bos_token"):
        text = _token_text(config.get(key))
        if text is not None:
            found[key] = text
    return found


def load_json_tokenizer(path: Path) -> JsonTokenizer:
    """A `tokenizer.json` file; DataError when it is not one or names an end token it lacks."""
    try:
        from tokenizers import Tokenizer as Backend
    except ImportError as error:
        raise DataError(f"{path}: reading a tokenizer.json needs the tokenizers package",
                        hint="pip install tokenizers") from error
    try:
        backend = Backend.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise DataError(f"{path}: not a Hugging Face tokenizer.json ({str(error).splitlines()[0]})") from error
    special = _special_tokens(path)
    if "eos_token" in special:
        eos_id = backend.token_to_id(special["eos_token"])
        if eos_id is None:
            raise DataError(f"{path.with_name(TOKENIZER_CONFIG_FILE)}: eos_token {special['eos_token']!r} is not "
                            f"in {path.name}'s vocabulary")
    else:
        eos_id = next((backend.token_to_id(t) for t in USUAL_EOS_TOKENS if backend.token_to_id(t) is not None), -1)
    bos_id = backend.token_to_id(special["bos_token"]) if "bos_token" in special else None
    return JsonTokenizer(path, backend, eos_id, -1 if bos_id is None else bos_id)
