"""`toolkit-gsm-symbolic`: generate GSM-Symbolic data sets from templates.

    toolkit-gsm-symbolic generate --variant symbolic --instances 50 --seed 0 --out symbolic.jsonl
    toolkit-gsm-symbolic generate --templates ~/ml-gsm-symbolic/templates --variant p1 --out p1.jsonl
    toolkit-gsm-symbolic generate --variant noop --instances 50 --out noop.jsonl
    toolkit-gsm-symbolic generate --original --out original.jsonl

Templates are read from `DIR/<variant>/*.json` (the official layout; names, numbers and noop
rewrite the instances of `DIR/symbolic/`); without `--templates` the
project's own templates shipped with the package are used. Rows follow the official generated-data
format plus `variant` and `values`, one JSON object per line, template by template.

A folder run carries on past a template that cannot be used: each one is written or refused with
its reason (`refused: FILE: why`), a summary line follows (`250/250 templates, 12,500 instances`),
and the exit code is 2 when any was refused (the others are still written). `--stats FILE` writes
one JSON line per template: how it was sampled and its acceptance rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.sampler import DEFAULT_MAX_TRIES, VARIANTS, SamplerStats, generate
from plugins.gsm_symbolic.template import load_template, template_paths
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.files import atomic_write_text


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-gsm-symbolic", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate_command = commands.add_parser("generate", help="write a JSONL data set of template instances")
    generate_command.add_argument("--templates", type=Path, default=None,
                                  help="folder holding <variant>/NNNN.json (default: the shipped templates)")
    generate_command.add_argument("--variant", choices=VARIANTS, default="symbolic",
                                  help="symbolic/p1/p2: templates of DIR/<variant>/, every variable sampled; "
                                       "names or numbers: only that kind re-sampled (DIR/symbolic/); "
                                       "noop: symbolic plus one inconsequential clause")
    generate_command.add_argument("--instances", type=int, default=50, help="instances per template")
    generate_command.add_argument("--seed", type=int, default=0)
    generate_command.add_argument("--original", action="store_true",
                                  help="one instance per template with every variable at its original value")
    generate_command.add_argument("--max-tries", type=int, default=DEFAULT_MAX_TRIES,
                                  help="rejection-sampling draws per instance before giving up")
    generate_command.add_argument("--stats", type=Path, default=None,
                                  help="also write per-template sampling statistics (JSON lines) here")
    generate_command.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    return parser.parse_args(argv)


def stats_row(path: Path, stats: SamplerStats | None, refusal: str | None) -> dict:
    row: dict = {"template": f"{path.parent.name}/{path.name}", "status": "refused" if refusal else "written"}
    if stats is not None:
        row |= {"method": stats.method, "acceptance": stats.acceptance, "draws": stats.draws, "valid": stats.valid,
                "solutions": stats.solutions, "steps": stats.steps, "inconsistent": stats.inconsistent}
    if refusal:
        row["reason"] = refusal
    return row


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.instances < 1 or arguments.max_tries < 1:
        raise TemplateError("--instances and --max-tries must be at least 1")
    paths = template_paths(arguments.templates, arguments.variant)
    instances = 1 if arguments.original else arguments.instances
    rows: list[dict] = []
    refused: list[str] = []
    stats_rows: list[dict] = []
    for path in paths:
        try:
            template_rows, stats = generate(load_template(path), instances, arguments.seed, original=arguments.original,
                                            variant=arguments.variant, max_tries=arguments.max_tries)
        except TemplateError as error:
            reason = error.one_line()
            refused.append(reason if reason.startswith(str(path)) else f"{path}: {reason}")
            if len(paths) == 1:
                raise TemplateError(refused[-1]) from None  # the one `error:` line names file and line
            print(f"refused: {refused[-1]}", file=sys.stderr)
            stats_rows.append(stats_row(path, None, reason))
            continue
        rows.extend(template_rows)
        stats_rows.append(stats_row(path, stats, None))
    if not rows:
        raise TemplateError(f"no template of {len(paths)} could be used; nothing written")
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(arguments.out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    if arguments.stats is not None:
        atomic_write_text(arguments.stats, "".join(json.dumps(row) + "\n" for row in stats_rows))
    written = len(paths) - len(refused)
    summary = f"{written}/{len(paths)} templates, {len(rows):,} instances written to {arguments.out}"
    if refused:
        summary += f"; {len(refused)} refused (see above)"
    print(summary, file=sys.stderr)
    return 2 if refused else 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
