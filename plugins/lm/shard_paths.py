"""Where the text shards are: a user's shard pattern or folder turned into shard files, with errors that
name the setting to change.

Users point at their data in the ways they have it: a glob (`data/train-*.tar`), a folder the shard
builder wrote (`data/`: its `train-*.tar`, and `val-*.tar` for validation), or, by mistake, plain
text (`mytext/` or `mytext/*.txt`). Plain text files are not shards; the error says so and names
`tools/build_text_shards.py`, which turns such a folder into train/val shards.

`option` in every function is how the user gave the location (`data.train_shards`, `--shards`):
each error starts with it, so the user knows which setting to change.
"""

from __future__ import annotations

from pathlib import Path

from plugins.lm.shard_writer import TEXT_SUFFIXES
from toolkit.data.shards import expand_shard_pattern
from toolkit.errors import DataError

SHARD_SUFFIXES = (".tar", ".tar.gz")
BUILD_TOOL = "tools/build_text_shards.py"
NO_VALIDATION = "none"  # data.val_shards value that turns validation off without a warning


def _build_hint(source: Path | str, option: str) -> str:
    return (f"plain text files are not shards: run `python {BUILD_TOOL} {source} data/` and set "
            f"{option} 'data/train-*.tar'")


def _folder_pattern(folder: Path, option: str, split: str) -> str:
    """The shards of `split` in a folder (`split-*.tar`), else every `.tar` there."""
    if any(folder.glob(f"{split}-*.tar")):
        return str(folder / f"{split}-*.tar")
    if any(path.name.endswith(SHARD_SUFFIXES) for path in folder.iterdir()):
        return str(folder / "*.tar*")
    if any(path.suffix.lower() in TEXT_SUFFIXES for path in folder.rglob("*") if path.is_file()):
        raise DataError(f"{option}: {folder} is a folder of text files, not of .tar shards",
                        hint=_build_hint(folder, option))
    raise DataError(f"{option}: {folder} holds no .tar shards", hint=f"point {option} at shard files "
                    f"(a glob such as 'data/train-*.tar'), or build them with `python {BUILD_TOOL}`")


def text_shard_paths(pattern: str, option: str, split: str = "train") -> list[Path]:
    """The shard files `pattern` names (a glob/brace pattern, or a folder: its `split-*.tar`), sorted."""
    folder = Path(pattern).expanduser()
    if "::" not in pattern and folder.is_dir():
        pattern = _folder_pattern(folder, option, split)
    try:
        paths = expand_shard_pattern(pattern)
    except DataError as error:
        raise DataError(f"{option}: {error.message}", hint=error.hint) from error
    plain = [path for path in paths if not path.name.endswith(SHARD_SUFFIXES)]
    if plain:
        shown = plain[0]
        raise DataError(f"{option}: {shown} is not a .tar shard ({len(plain)} of the {len(paths)} files matched)",
                        hint=_build_hint(shown.parent, option))
    return paths


def sibling_val_pattern(train_paths: list[Path]) -> str:
    """`DIR/val-*.tar` when every train shard is `DIR/train-*.tar` and DIR holds val shards, else ""."""
    folders = {path.parent for path in train_paths}
    if len(folders) != 1 or not all(path.name.startswith("train-") for path in train_paths):
        return ""
    folder = folders.pop()
    return str(folder / "val-*.tar") if any(folder.glob("val-*.tar")) else ""
