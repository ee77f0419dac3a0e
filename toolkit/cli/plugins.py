"""`toolkit-plugins`: each loaded plugin, its version and what it registers."""

from __future__ import annotations

import argparse
import json
import sys

from toolkit.cli.common import run_cli
from toolkit.plugins import KINDS, get_registries


def describe() -> list[dict]:
    registries = get_registries()
    rows = []
    for info in registries.plugins:
        registered = {kind: registries[kind].by_plugin(info.name) for kind in KINDS}
        # Where `toolkit-train family/name.yaml` looks: the namespace and the folder behind it.
        registered["recipe_dirs"] = [str(folder) for folder in registries.recipe_dirs if folder.plugin == info.name]
        rows.append({
            "name": info.name,
            "module": info.module,
            "distribution": info.distribution,
            "version": info.version,
            "registers": {kind: names for kind, names in registered.items() if names},
        })
    return rows


def main_with_arguments(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="toolkit-plugins", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    arguments = parser.parse_args(argv)
    rows = describe()
    if arguments.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']} {row['version'] or '?'} ({row['module']}, from {row['distribution'] or '?'})")
        for kind, names in row["registers"].items():
            print(f"  {kind}: {', '.join(names)}")
    return 0


def main() -> None:
    sys.exit(run_cli(main_with_arguments))
