"""`toolkit-bench SWEEP.yaml [--out DIR] [--device NAME]`: run a training-cost sweep, cell by cell
under torchrun, into DIR/results.csv and DIR/figures/*.png. `--list-sweeps`, `--list-cells`,
`--plot CSV...` (figures only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit.cli.common import ArgumentParser, run_cli

EPILOG = """the sweep file (keys and defaults):
  base: RECIPE                 the recipe every cell starts from (a path or a plugin recipe name)
  device: NAME                 the hardware it runs on, a key of prices and peak_tflops (--device wins)
  nproc: 1                     processes per cell (torchrun --nproc_per_node), unless the grid sets it
  overrides: {KEY: VALUE}      recipe keys every cell sets (section.key)
  grid: {AXIS: VALUES}         a recipe key and its values, a named axis mapping labels to recipe
                               keys ({100M: {model.num_layers: 9, model.model_dim: 864}}), or nproc
  repeats: 3, steps: 10        timed windows per cell, optimizer steps per window (their spread is kept)
  warmup_steps: 2              steps before the first window, never timed
  loss_token_budget: 0         Loss/$ from the loss once this many tokens are trained (0 = no Loss/$)
  cell_timeout_s: 1800         a cell still running then is stopped and recorded as failed
  prices: {DEVICE: $/h}        per device per hour
  peak_tflops: {DEVICE: {PRECISION: TFLOP/s}}   per device; MFU's peak is this x processes
a shipped sweep: toolkit-bench openelm/bench/cpu.yaml (see --list-sweeps)"""


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-bench", epilog=EPILOG,
                            description="Measure tokens/s, MFU, memory, Token/$ and Loss/$ over a grid of recipe "
                                        "keys, each cell under torchrun. An interrupted sweep resumes.")
    parser.add_argument("sweep", nargs="?", help="sweep YAML file, or a shipped one's name (openelm/bench/cpu)")
    parser.add_argument("--out", metavar="DIR", help="results folder (default: bench/<sweep name>)")
    parser.add_argument("--device", metavar="NAME", help="the hardware, a key of the sweep's prices (default: the file's)")
    parser.add_argument("--retry-failed", action="store_true", help="run again the cells recorded as failed or oom")
    parser.add_argument("--list-cells", action="store_true", help="print the cells (and their recipe overrides), exit")
    parser.add_argument("--list-sweeps", action="store_true", help="list the sweeps the installed plugins ship, exit")
    parser.add_argument("--plot", nargs="+", metavar="CSV", help="draw the figures from results CSVs, run nothing")
    arguments = parser.parse_args(argv)
    if arguments.sweep is None and not (arguments.list_sweeps or arguments.plot):
        parser.error("the following arguments are required: sweep (or --list-sweeps, --plot)")
    return arguments


def shipped_sweeps(registries) -> list:
    """The plugins' recipe files that are sweeps (a top-level `grid:`)."""
    import yaml

    from toolkit.recipe import list_recipes

    entries = []
    for entry in list_recipes(registries.recipe_dirs):
        try:
            values = yaml.safe_load(entry.path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(values, dict) and "grid" in values:
            entries.append(entry)
    return entries


def find_sweep(name: str, registries) -> Path:
    from toolkit.errors import RecipeError
    from toolkit.recipe import find_recipe

    try:
        return find_recipe(name, registries.recipe_dirs)
    except RecipeError:
        from toolkit.bench.sweep import SweepError

        raise SweepError(f"sweep file not found: {name}", hint="toolkit-bench --list-sweeps lists the shipped ones") from None


def main_with_arguments(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    from toolkit.bench import figures
    from toolkit.plugins import get_registries

    if arguments.plot:
        out = Path(arguments.out) if arguments.out else Path(arguments.plot[0]).parent
        for path in figures.draw_figures([Path(item) for item in arguments.plot], out / "figures"):
            print(f"wrote {path}")
        return 0
    registries = get_registries()
    if arguments.list_sweeps:
        for entry in shipped_sweeps(registries):
            print(f"{entry.name}  {entry.summary}".rstrip())
        return 0
    from toolkit.bench.runner import CellProgress, prepare_cells, run_sweep
    from toolkit.bench.sweep import read_sweep

    path = find_sweep(arguments.sweep, registries)
    sweep = read_sweep(path, arguments.device)
    prepared = prepare_cells(sweep, registries)  # every cell checked before anything is written
    if arguments.list_cells:
        for item in prepared:
            print(f"{item.cell.id}  (nproc {item.cell.nproc}, {item.total_steps} steps): {' '.join(item.cell.overrides)}")
        return 0
    out = Path(arguments.out) if arguments.out else Path("bench") / path.stem
    results = run_sweep(sweep, prepared, out, CellProgress(), retry_failed=arguments.retry_failed)
    print(f"results: {results}")
    for figure in figures.draw_figures([results], out / "figures"):
        print(f"wrote {figure}")
    return 0


def main() -> None:
    sys.exit(run_cli(main_with_arguments))


if __name__ == "__main__":
    main()
