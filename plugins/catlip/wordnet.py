"""Find a WordNet 3.0 reader: nltk's own data, else the Debian `wordnet-base` files, else an error.

The Debian files are copied (not linked: nltk's reader refuses some links) into
`<cache>/nltk_data/corpora/wordnet/` with a `lexnames` file nltk needs and Debian lacks; the copy
is built in a temporary directory and renamed, so a crash never leaves half a corpus.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.files import atomic_directory

DEBIAN_WORDNET = Path("/usr/share/wordnet")
INSTALL_HINT = (
    "apt-get install wordnet-base wordnet-sense-index, "
    "or python -c \"import nltk; nltk.download('wordnet')\""
)
# The standard lexicographer files, numbered 00..44, with their part of speech (1 n, 2 v, 3 a, 4 r).
LEXNAMES = (
    [("adj.all", 3), ("adj.pert", 3), ("adv.all", 4)]
    + [(f"noun.{name}", 1) for name in (
        "Tops act animal artifact attribute body cognition communication event feeling food group "
        "location motive object person phenomenon plant possession process quantity relation shape "
        "state substance time").split()]
    + [(f"verb.{name}", 2) for name in (
        "body change cognition communication competition consumption contact creation emotion "
        "motion perception possession social stative weather").split()]
    + [("adj.ppl", 3)]
)
_REQUIRED = ("data.noun", "index.noun")
# nltk warns on first use that the Open Multilingual Wordnet is absent; only English is used here.
warnings.filterwarnings("ignore", message="The multilingual functions are not available")


class WordNetMissing(ToolkitError):
    """Neither nltk's WordNet data nor the Debian WordNet files could be found."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit")


def _try_nltk(root: Path | None):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if root is not None:
        directory = root / "corpora" / "wordnet"
        if not (directory / "lexnames").is_file():
            return None
        if str(root) not in nltk.data.path:  # nltk only reads corpora under its data path
            nltk.data.path.insert(0, str(root))
        return WordNetCorpusReader(str(directory), None)
    try:
        path = nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            path = nltk.data.find("corpora/wordnet.zip/wordnet/")
        except LookupError:
            return None
    return WordNetCorpusReader(path, None)


def build_from_debian(source: Path, cache_dir: Path) -> Path:
    """Copy the Debian WordNet files into `cache_dir/nltk_data` (atomically); returns that root."""
    root = cache_dir / "nltk_data"
    target = root / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return root
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_directory(target) as staging:
            for item in source.iterdir():
                if item.is_file():
                    shutil.copyfile(item, staging / item.name)
            lines = [f"{index:02d}\t{name}\t{pos}" for index, (name, pos) in enumerate(LEXNAMES)]
            (staging / "lexnames").write_text("\n".join(lines) + "\n")
    except OSError:  # another process won the race (its directory is in place), or a real failure
        if not (target / "lexnames").is_file():
            raise
    return root


def load_wordnet(debian_dir: Path = DEBIAN_WORDNET, cache_dir: Path | None = None, use_nltk_data: bool = True):
    """An nltk `WordNetCorpusReader`, from nltk's data or the Debian files; else `WordNetMissing`."""
    if use_nltk_data:
        reader = _try_nltk(None)
        if reader is not None:
            return reader
    debian_dir = Path(debian_dir)
    if all((debian_dir / name).is_file() for name in _REQUIRED):
        root = build_from_debian(debian_dir, Path(cache_dir) if cache_dir else default_cache_dir())
        reader = _try_nltk(root)
        if reader is not None:
            return reader
    raise WordNetMissing(f"WordNet 3.0 not found (nltk data, or Debian files in {debian_dir})", hint=INSTALL_HINT)
