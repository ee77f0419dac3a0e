"""`toolkit-train RECIPE [key=value ...] [--resume auto|DIR] [--dry-run]`, `toolkit-train --list-recipes`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.config import DistConfig, TrainerConfig, format_config
from toolkit.plugins import Registries, get_registries
from toolkit.capabilities import LayerSummary
from toolkit.recipe import SINGLE_MODEL, Recipe, list_recipes, load_recipe


def core_keys_help() -> str:
    """The epilog of `--help`: every trainer and dist key with its default."""
    return "\n".join(["the trainer: and dist: keys a recipe or an override sets (with their defaults):",
                      *format_config(TrainerConfig, "trainer."), *format_config(DistConfig, "dist."),
                      "a component's keys: toolkit-plugins --options KIND NAME (say optimizers adamw)"])


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="toolkit-train",
        description="Train the model a recipe describes. Overrides like trainer.max_steps=10 win over the file.",
        epilog=core_keys_help(),
    )
    parser.add_argument("recipe", nargs="?",
                        help="recipe YAML file, or a name in a plugin's recipe dir (openelm/tiny; see --list-recipes)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--resume", metavar="auto|DIR", help="continue from the run's latest checkpoint (auto) or DIR")
    parser.add_argument("--dry-run", action="store_true", help="build the model on the meta device, print its size, exit")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in trainer.out_dir")
    parser.add_argument("--accept-changes", action="store_true",
                        help="resume although the recipe differs from the checkpoint's (the changed keys are named)")
    parser.add_argument("--list-recipes", action="store_true", help="list the recipes the installed plugins ship, exit")
    arguments = parser.parse_intermixed_args(argv)
    if arguments.recipe is None and not arguments.list_recipes:
        parser.error("the following arguments are required: recipe (or --list-recipes)")
    return arguments


def print_recipes(registries: Registries) -> None:
    """One line per recipe: the name to type, its plugin, the first sentence of its comment."""
    entries = list_recipes(registries.recipe_dirs)
    if not entries:
        print("no installed plugin ships recipes")
        return
    width = max(len(entry.name) for entry in entries)
    plugin_width = max(len(entry.plugin) for entry in entries)
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.plugin:<{plugin_width}}  {entry.summary}".rstrip())


def dry_run(recipe: Recipe) -> None:
    """Each model of the recipe built on the meta device: its blocks (when it can summarise them) and size."""
    from toolkit.engine.console import count_parameters  # the engine loads only to train or dry-run

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
    if arguments.list_recipes:
        print_recipes(get_registries())
        return 0
    recipe = load_recipe(arguments.recipe, arguments.overrides, get_registries())
    if arguments.dry_run:
        dry_run(recipe)
        return 0
    from toolkit.assembly import assemble  # torch.distributed and the engine load only to train
    from toolkit.engine.trainer import Trainer
    from toolkit.run_dir import claim_run_directory, clear_previous_run

    is_main = int(os.environ.get("RANK", "0")) == 0
    # The run directory is checked and locked before anything is built or written.
    claim = claim_run_directory(recipe.values, Path(recipe.trainer.out_dir), arguments.resume, is_main,
                                overwrite=arguments.overwrite, accept_changes=arguments.accept_changes)
    trainer, finished = None, False
    try:
        parts = assemble(recipe)
        if claim.clear_previous:
            clear_previous_run(claim.run_dir)
        trainer = Trainer(parts, resume=str(claim.resume_from) if claim.resume_from else None)
        result = trainer.fit()
        finished = True
    except BaseException:
        claim.release(failed=True)
        raise
    finally:
        if trainer is not None:
            trainer.close(finished)
    claim.release()
    if trainer.context.is_main:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.final_metrics.items() if k.startswith("val_"))
        print(f"done: step {result.step}{', ' + shown if shown else ''}; checkpoint {result.last_checkpoint}")
    return 0


def main() -> None:
    sys.exit(run_cli(main_with_arguments))


if __name__ == "__main__":
    main()
