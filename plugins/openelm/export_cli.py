"""`toolkit-export`: write a trained OpenELM checkpoint as a stand-alone Hugging Face directory.

    toolkit-export --format hf runs/openelm-270M --out exported/openelm-270M
    toolkit-export --format hf-llama runs/smollm2-sft --out exported/smollm2-sft

CHECKPOINT_OR_RUN_DIR is one `step-NNNNNN/` checkpoint or a run directory (its latest checkpoint).
DIR receives the `apple/OpenELM-*` layout (`config.json`, `model.safetensors`), the run's
tokenizer (`tokenizer.model` and transformers' tokenizer files) and modelling code of our own,
so that `toolkit-generate`, `toolkit-eval` and transformers'
`AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` all load it with its tokenizer
(see plugins/openelm/hf_export.py). `hf-llama` writes transformers' own Llama layout instead (no
code shipped) for models that are Llamas: uniform widths and no Q/K norm, as a SmolLM2 import.
DIR must not exist yet (or be empty); it appears only once
every file is complete.
"""

from __future__ import annotations

import argparse
import sys

from toolkit.cli.common import ArgumentParser, run_cli

FORMATS = {"hf": "openelm", "hf-llama": "llama"}  # --format -> export_hf's layout


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-export", description=__doc__.splitlines()[0])
    parser.add_argument("path", metavar="CHECKPOINT_OR_RUN_DIR", help="checkpoint directory or run directory")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="output layout (hf: Hugging Face OpenELM with our modelling code; hf-llama: "
                             "transformers' LlamaForCausalLM, for uniform-width models such as a SmolLM2 import)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output directory (created)")
    parser.add_argument("--tokenizer", metavar="FILE", default=None,
                        help="tokenizer to ship, a SentencePiece .model or a tokenizer.json (default: the "
                             "run's tokenizer.model or tokenizer.json, else the recipe's data.tokenizer)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    from plugins.openelm.hf_export import export_hf  # imports torch: only once the arguments are good

    out_dir = export_hf(arguments.path, arguments.out, tokenizer=arguments.tokenizer,
                        layout=FORMATS[arguments.format])
    print(f"wrote {out_dir} ({', '.join(sorted(path.name for path in out_dir.iterdir()))})")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
