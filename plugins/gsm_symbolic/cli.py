"""`toolkit-gsm-symbolic`: generate GSM-Symbolic data sets from templates.

    toolkit-gsm-symbolic generate --variant symbolic --instances 50 --seed 0 --out symbolic.jsonl
    toolkit-gsm-symbolic generate --templates ~/ml-gsm-symbolic/templates --variant p1 --out p1.jsonl
    toolkit-gsm-symbolic generate --variant noop --instances 50 --out noop.jsonl
    toolkit-gsm-symbolic generate --original --out original.jsonl

Templates are read from `DIR/<variant>/*.json` (the official layout; names, numbers and noop
rewrite the instances of `DIR/symbolic/`); without `--templates` the
project's own templates shipped with the package are used. Rows follow the official generated-data
format plus `variant` and `values`, one JSON object per line, template by template.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.sampler import DEFAULT_MAX_TRIES, VARIANTS, generate_rows
from plugins.gsm_symbolic.template import load_templates
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.files import atomic_writer


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-gsm-symbolic", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a JSONL data set of template instances")
    generate.add_argument("--templates", type=Path, default=None,
                          help="folder holding <variant>/NNNN.json (default: the shipped templates)")
    generate.add_argument("--variant", choices=VARIANTS, default="symbolic",
                          help="symbolic/p1/p2: templates of DIR/<variant>/, every variable sampled; "
                               "names or numbers: only that kind re-sampled (DIR/symbolic/); "
                               "noop: symbolic plus one inconsequential clause")
    generate.add_argument("--instances", type=int, default=50, help="instances per template")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--original", action="store_true",
                          help="one instance per template with every variable at its original value")
    generate.add_argument("--max-tries", type=int, default=DEFAULT_MAX_TRIES,
                          help="rejection-sampling draws per instance before giving up")
    generate.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    return parser.parse_args(argv)


def write_jsonl_atomically(path: Path, rows: list[dict]) -> None:
    """Write next to `path`, then rename, so a crash never leaves a half-written data set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.instances < 1 or arguments.max_tries < 1:
        raise TemplateError("--instances and --max-tries must be at least 1")
    templates = load_templates(arguments.templates, arguments.variant)
    instances = 1 if arguments.original else arguments.instances
    rows = []
    for template in templates:
        rows.extend(generate_rows(template, instances, arguments.seed, original=arguments.original,
                                  variant=arguments.variant, max_tries=arguments.max_tries))
    write_jsonl_atomically(arguments.out, rows)
    print(f"wrote {len(rows)} rows from {len(templates)} templates to {arguments.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
