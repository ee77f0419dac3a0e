"""`toolkit-train RECIPE [key=value ...] [--resume auto|DIR] [--dry-run]`."""

from __future__ import annotations

import argparse
import sys

import torch

from toolkit.cli.common import run_cli
from toolkit.plugins import get_registries
from toolkit.capabilities import LayerSummary
from toolkit.recipe import SINGLE_MODEL, Recipe, load_recipe


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="toolkit-train",
        description="Train the model a recipe describes. Overrides like trainer.max_steps=10 win over the file.",
    )
    parser.add_argument("recipe", help="recipe YAML file, or a name in a plugin's recipe dir (openelm/tiny)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--resume", metavar="auto|DIR", help="continue from the run's latest checkpoint (auto) or DIR")
    parser.add_argument("--dry-run", action="store_true", help="build the model on the meta device, print its size, exit")
    return parser.parse_intermixed_args(argv)


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def dry_run(recipe: Recipe) -> None:
    """Each model of the recipe built on the meta device: its blocks (when it can summarise them) and size."""
    for name, spec in recipe.models.items():
        role = "frozen" if spec.frozen else "trained"
        prefix = "" if name == SINGLE_MODEL else f"{name} ({role}) "
        if spec.component is None:
            print(f"{prefix}model: from {spec.source} (not built in a dry run)")
            continue
        with torch.device("meta"):
            model = spec.component.build()
        print(f"{prefix}model: {spec.component.component.name} ({type(model).__name__})")
        for line in model.layer_summary() if isinstance(model, LayerSummary) else []:
            print(f"  {line}")
        print(f"{prefix}params: {count_parameters(model) / 1e6:.2f}M")


def main_with_arguments(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    recipe = load_recipe(arguments.recipe, arguments.overrides, get_registries())
    if arguments.dry_run:
        dry_run(recipe)
        return 0
    from toolkit.assembly import build_trainer  # torch.distributed and the engine load only to train

    trainer = build_trainer(recipe, resume=arguments.resume)
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    if trainer.context.is_main:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.final_metrics.items() if k.startswith("val_"))
        print(f"done: step {result.step}{', ' + shown if shown else ''}; checkpoint {result.last_checkpoint}")
    return 0


def main() -> None:
    sys.exit(run_cli(main_with_arguments))


if __name__ == "__main__":
    main()
