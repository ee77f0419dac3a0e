"""Recipes: YAML (OmegaConf) files with `base:` inheritance, `a.b=c` overrides, typed validation.

A recipe has component sections (`model`, `task`, `loss`, `data`, `optim`, `schedule`, `eval`,
each `name:` plus that component's config fields; `callbacks` is a list of such sections) and the
core sections `trainer` and `dist`. Merge order: base files, then the file, then command-line
overrides, so overrides always win. Recipes are data: nothing in them is ever executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.config import DistConfig, TrainerConfig, build_config
from toolkit.errors import RecipeError, RegistryError
from toolkit.plugins import Registries
from toolkit.registry import Component, closest

# section -> (registry kind, required)
COMPONENT_SECTIONS: dict[str, tuple[str, bool]] = {
    "model": ("models", True),
    "task": ("tasks", True),
    "loss": ("losses", False),
    "data": ("datasets", True),
    "optim": ("optimizers", True),
    "schedule": ("schedulers", False),
    "eval": ("evaluators", False),
}
CORE_SECTIONS: dict[str, type] = {"trainer": TrainerConfig, "dist": DistConfig}
ALL_SECTIONS = [*COMPONENT_SECTIONS, "callbacks", *CORE_SECTIONS]


@dataclass
class ComponentSpec:
    """A recipe section resolved to its registered component and typed config."""

    section: str
    component: Component
    config: Any

    def build(self, *args: Any, **kwargs: Any) -> Any:
        return self.component.factory(self.config, *args, **kwargs)


@dataclass
class Recipe:
    source: Path
    values: dict[str, Any]  # the fully resolved recipe, as saved in the run directory
    components: dict[str, ComponentSpec]
    callbacks: list[ComponentSpec] = field(default_factory=list)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.values, sort_keys=False)


def find_recipe(name: str, recipe_dirs: list[Path], relative_to: Path | None = None) -> Path:
    """A recipe path from a file name, trying the given folder, the cwd, then plugins' recipe dirs."""
    candidates = [Path(name)] if relative_to is None else [relative_to / name, Path(name)]
    for directory in recipe_dirs:
        candidates.append(directory / name)
    for candidate in list(candidates):
        if candidate.suffix not in (".yaml", ".yml"):
            candidates.append(candidate.with_name(candidate.name + ".yaml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in recipe_dirs) or "no plugin recipe dirs"
    raise RecipeError(f"recipe file not found: {name}", hint=f"looked in the current directory and {where}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecipeError(f"{path}: not valid YAML: {first_line}") from error
    container = OmegaConf.to_container(loaded, resolve=False)
    if container is None:
        return {}
    if not isinstance(container, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(container).__name__}")
    return container


def _load_with_bases(path: Path, recipe_dirs: list[Path], chain: tuple[Path, ...] = ()) -> Any:
    resolved = path.resolve()
    if resolved in chain:
        raise RecipeError(f"{path}: 'base:' inheritance loops back on itself")
    values = _read_yaml(path)
    base = values.pop("base", None)
    if base is None:
        return OmegaConf.create(values)
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{path}: 'base:' must be a file name or a list of file names")
    merged = OmegaConf.create({})
    for base_name in bases:
        base_path = find_recipe(base_name, recipe_dirs, relative_to=path.parent)
        merged = OmegaConf.merge(merged, _load_with_bases(base_path, recipe_dirs, (*chain, resolved)))
    return OmegaConf.merge(merged, OmegaConf.create(values))


def _parse_overrides(overrides: list[str]) -> Any:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"override '{item}' is not of the form section.key=value")
    # `key=` means the empty string, as in Hydra (OmegaConf alone reads it as null); `key=null`
    # still gives None.
    overrides = [f"{item}''" if item.endswith("=") else item for item in overrides]
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as error:
        raise RecipeError(f"bad override: {error}".splitlines()[0]) from error


def _component(section: str, kind: str, values: Any, registries: Registries) -> ComponentSpec:
    if not isinstance(values, dict) or "name" not in values:
        known = ", ".join(registries[kind].names())
        raise RecipeError(f"recipe section '{section}' needs a 'name:'", hint=f"known {kind}: {known}")
    options = dict(values)
    name = options.pop("name")
    try:
        component = registries[kind].get(str(name))
    except RegistryError as error:
        raise RecipeError(f"{section}.name: {error.message}", hint=error.hint) from error
    if component.config_class is None:
        if options:
            raise RecipeError(f"{section}: {kind[:-1]} '{name}' takes no options, got {sorted(options)}")
        return ComponentSpec(section, component, None)
    return ComponentSpec(section, component, build_config(component.config_class, options, section))


def load_recipe(name: str, overrides: list[str], registries: Registries) -> Recipe:
    """Read, inherit, override, resolve and validate a recipe."""
    path = find_recipe(name, registries.recipe_dirs)
    merged = OmegaConf.merge(_load_with_bases(path, registries.recipe_dirs), _parse_overrides(overrides))
    try:
        values = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as error:
        raise RecipeError(f"{path}: {str(error).splitlines()[0]}") from error
    for section in values:
        if section not in ALL_SECTIONS:
            suggestion = closest(str(section), ALL_SECTIONS)
            raise RecipeError(
                f"{path}: unknown recipe section '{section}'",
                hint=f"did you mean '{suggestion}'?" if suggestion else f"sections: {', '.join(ALL_SECTIONS)}",
            )
    components: dict[str, ComponentSpec] = {}
    for section, (kind, required) in COMPONENT_SECTIONS.items():
        if section in values and values[section] is not None:
            components[section] = _component(section, kind, values[section], registries)
        elif required:
            raise RecipeError(f"{path}: recipe has no '{section}' section", hint=f"known {kind}: {', '.join(registries[kind].names())}")
    callback_values = values.get("callbacks") or []
    if not isinstance(callback_values, list):
        raise RecipeError(f"{path}: 'callbacks' must be a list of sections with 'name:'")
    callbacks = [
        _component(f"callbacks[{index}]", "callbacks", item, registries)
        for index, item in enumerate(callback_values)
    ]
    core = {}
    for section, config_class in CORE_SECTIONS.items():
        try:
            core[section] = build_config(config_class, values.get(section) or {}, section)
        except RecipeError as error:  # the core's own sections: say which file
            raise RecipeError(f"{path}: {error.message}", hint=error.hint) from error
    return Recipe(path, values, components, callbacks, core["trainer"], core["dist"])
