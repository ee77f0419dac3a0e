"""`toolkit-export`: write a trained OpenELM checkpoint in the Hugging Face `apple/OpenELM-*` layout.

    toolkit-export --format hf runs/openelm-270M --out exported/openelm-270M

CHECKPOINT_OR_RUN_DIR is one `step-NNNNNN/` checkpoint or a run directory (its latest checkpoint).
DIR receives `config.json` and `model.safetensors`; it must not exist yet (or be empty), and it
appears only once both files are complete.
"""

from __future__ import annotations

import argparse
import sys

from toolkit.cli.common import ArgumentParser, run_cli

FORMATS = ("hf",)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-export", description=__doc__.splitlines()[0])
    parser.add_argument("path", metavar="CHECKPOINT_OR_RUN_DIR", help="checkpoint directory or run directory")
    parser.add_argument("--format", choices=FORMATS, required=True, help="output layout (hf: Hugging Face)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory (created)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    from plugins.openelm.convert import (
        export_hf,  # imports torch; only once the arguments are good
    )

    out_dir = export_hf(arguments.path, arguments.out)
    print(f"wrote {out_dir} (config.json, model.safetensors)")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
