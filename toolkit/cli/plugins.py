"""`toolkit-plugins`: each loaded plugin, its version and what it registers (recipes too);
`toolkit-plugins --options KIND NAME`: one component's keys with their defaults."""

from __future__ import annotations

import json
import sys

from toolkit.cli.common import ArgumentParser, component_options, run_cli
from toolkit.errors import RegistryError
from toolkit.plugins import KINDS, get_registries
from toolkit.recipe import list_recipes
from toolkit.registry import closest


def describe() -> list[dict]:
    registries = get_registries()
    rows = []
    for info in registries.plugins:
        registered = {kind: registries[kind].by_plugin(info.name) for kind in KINDS}
        # Where `toolkit-train family/name.yaml` looks: the namespace and the folder behind it.
        own_dirs = [folder for folder in registries.recipe_dirs if folder.plugin == info.name]
        registered["recipe_dirs"] = [str(folder) for folder in own_dirs]
        registered["recipes"] = [entry.name for entry in list_recipes(own_dirs)]
        rows.append({
            "name": info.name,
            "module": info.module,
            "distribution": info.distribution,
            "version": info.version,
            "registers": {kind: names for kind, names in registered.items() if names},
        })
    return rows


def main_with_arguments(argv: list[str]) -> int:
    parser = ArgumentParser(prog="toolkit-plugins", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--options", nargs=2, metavar=("KIND", "NAME"),
                        help=f"print one component's keys and defaults; KIND is one of {', '.join(KINDS)}")
    arguments = parser.parse_args(argv)
    if arguments.options:
        kind, name = arguments.options
        kind = kind if kind in KINDS or f"{kind}s" not in KINDS else f"{kind}s"  # `optimizer` means optimizers
        if kind not in KINDS:
            suggestion = closest(kind, list(KINDS))
            raise RegistryError(f"--options: unknown kind '{kind}'",
                                hint=f"did you mean '{suggestion}'?" if suggestion else f"kinds: {', '.join(KINDS)}")
        print("\n".join(component_options(get_registries()[kind].get(name))))
        return 0
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
