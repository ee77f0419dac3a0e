"""`python -m plugins.openelm.import_llama SRC --out RUN_DIR`: a Llama checkpoint as a toolkit run directory.

SRC is a Hugging Face Llama directory or a Llama `.gguf` file (SmolLM2-135M: DATA.md); llama.py
maps it onto the toolkit's OpenELM. RUN_DIR is written like a training run or a soup:
`recipe.yaml` (a `model:` section naming `openelm` with the imported widths), `step-000000/`
with `model.safetensors`, `recipe.yaml` and `trainer_state.json`, the tokenizer (`tokenizer.json`
+ `tokenizer_config.json` for byte-level BPE models, transformers' own conversion of a GGUF's
vocabulary; or a Llama directory's `tokenizer.model`) and `import.json` naming the source. So a
recipe's `models.<role>.source: RUN_DIR` (with `data.tokenizer=RUN_DIR/tokenizer.json`),
`models.value.init_from`, `toolkit-generate`, `toolkit-eval` and `toolkit-soup` take it as any run.
RUN_DIR must not exist; it appears only once every file is complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

from toolkit.cli.common import ArgumentParser, run_cli

MODEL_NAME = "openelm"  # the registered model the run's recipe names (its config carries every width)


def _tokenizer_files(src: Path, tokenizer: Path | None, scratch: Path) -> dict[str, Path]:
    """Name in the run directory -> file, for the tokenizer that goes with `src`."""
    from plugins.lm.tokenizer_files import run_tokenizer_file, tokenizer_run_files
    from toolkit.errors import CheckpointError

    if tokenizer is not None:
        return tokenizer_run_files(tokenizer)
    if src.is_dir():
        found = run_tokenizer_file(src)
        if found is None:
            raise CheckpointError(f"{src}: has neither tokenizer.json nor tokenizer.model",
                                  hint="pass --tokenizer with the model's tokenizer file")
        return tokenizer_run_files(found)
    from plugins.lm.hf_model import require_transformers
    from plugins.openelm.llama import first_line

    try:  # transformers turns the GGUF's vocabulary and merges into a tokenizers model
        converted = require_transformers().AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name,
                                                                  local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{src}: transformers could not read the GGUF file's tokenizer ({first_line(error)})",
                              hint="pass --tokenizer with the model's tokenizer.json") from error
    converted.save_pretrained(scratch)
    if not (scratch / "tokenizer.json").is_file():
        raise CheckpointError(f"{src}: transformers wrote no tokenizer.json for its tokenizer",
                              hint="pass --tokenizer with the model's tokenizer.json")
    return tokenizer_run_files(scratch / "tokenizer.json")


def import_run(src: str | Path, out: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write the run directory `out` holding the Llama checkpoint `src`; returns its checkpoint."""
    import yaml

    from plugins.lm.tokenizer import load_tokenizer
    from plugins.openelm.llama import import_llama
    from toolkit.checkpoint import checkpoint_name, save_weights
    from toolkit.errors import CheckpointError
    from toolkit.files import atomic_directory

    src, out = Path(src), Path(out)
    if out.exists():
        raise CheckpointError(f"{out}: already exists", hint="choose a new --out directory")
    if not out.parent.is_dir():
        raise CheckpointError(f"{out.parent}: no such directory (the parent of --out)")
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise CheckpointError(f"{tokenizer}: tokenizer file not found")
    model, config = import_llama(src)
    with tempfile.TemporaryDirectory(prefix="import-llama-") as scratch:
        files = _tokenizer_files(src, Path(tokenizer) if tokenizer is not None else None, Path(scratch))
        main_file = next(iter(files.values()))
        vocabulary = load_tokenizer(main_file)
        if vocabulary.vocab_size > config.vocab_size:
            raise CheckpointError(f"{main_file}: the tokenizer has {vocabulary.vocab_size} tokens but the model's "
                                  f"embedding only {config.vocab_size}")
        recipe_text = yaml.safe_dump({"model": {"name": MODEL_NAME, **dataclasses.asdict(config)}}, sort_keys=False)
        record = {"source": str(src.resolve()), "format": "gguf" if src.is_file() else "hf-llama"}
        with atomic_directory(out) as staging:
            checkpoint = staging / checkpoint_name(0)
            checkpoint.mkdir()
            save_weights(model.state_dict(), checkpoint / "model.safetensors")
            (checkpoint / "recipe.yaml").write_text(recipe_text)
            (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 0, "import": record}))
            (staging / "recipe.yaml").write_text(recipe_text)
            (staging / "import.json").write_text(json.dumps(record, indent=2) + "\n")
            for name, path in files.items():
                shutil.copyfile(path, staging / name)
    return out / checkpoint_name(0)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m plugins.openelm.import_llama", description=__doc__.splitlines()[0])
    parser.add_argument("src", metavar="SRC", help="a Hugging Face Llama directory or a Llama .gguf file")
    parser.add_argument("--out", metavar="RUN_DIR", required=True, help="the run directory to write (must not exist)")
    parser.add_argument("--tokenizer", metavar="FILE", default=None,
                        help="tokenizer file to keep with the run (default: SRC's tokenizer.json or tokenizer.model, "
                             "or the GGUF's vocabulary)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    checkpoint = import_run(arguments.src, arguments.out, arguments.tokenizer)
    print(f"wrote {checkpoint.parent} (model openelm, checkpoint {checkpoint.name})")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
