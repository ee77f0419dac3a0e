"""The file names a run directory keeps its tokenizer under, and which files those are.

Pure path logic shared by the SentencePiece tokenizer (tokenizer.py) and the Hugging Face
`tokenizer.json` one (json_tokenizer.py), kept apart so that neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

# What a run directory calls its tokenizer: a SentencePiece model, or a Hugging Face tokenizer.json.
SENTENCEPIECE_FILE = "tokenizer.model"
JSON_FILE = "tokenizer.json"
JSON_CONFIG_FILE = "tokenizer_config.json"  # its special tokens (json_tokenizer.py reads eos_token there)
RUN_TOKENIZER_FILES = (SENTENCEPIECE_FILE, JSON_FILE)


def tokenizer_run_files(path: str | Path) -> dict[str, Path]:
    """What a run directory keeps of the tokenizer file `path` (name there -> file): a `.json` one
    as tokenizer.json with the tokenizer_config.json beside it, if any; any other as tokenizer.model."""
    path = Path(path)
    if path.suffix != ".json":
        return {SENTENCEPIECE_FILE: path}
    files = {JSON_FILE: path}
    if path.with_name(JSON_CONFIG_FILE).is_file():
        files[JSON_CONFIG_FILE] = path.with_name(JSON_CONFIG_FILE)
    return files


def trained_tokenizer_file(directories: list[Path], recipe: dict) -> Path | None:
    """The tokenizer a run trained with: the first of `directories` (a checkpoint, its run) that
    keeps one, else the recipe's `data.tokenizer` if that file exists; None when neither does."""
    candidates = [found for found in map(run_tokenizer_file, directories) if found is not None]
    configured = (recipe.get("data") or {}).get("tokenizer")
    if configured:
        candidates.append(Path(configured).expanduser())
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def run_tokenizer_file(directory: Path) -> Path | None:
    """The tokenizer a run (or export, or soup) directory keeps, or None when it has none."""
    for name in RUN_TOKENIZER_FILES:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None
