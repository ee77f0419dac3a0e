"""Recipes: YAML (OmegaConf) files with `base:` inheritance, `a.b=c` overrides, typed validation.

A recipe has component sections (`model`, `task`, `loss`, `data`, `optim`, `schedule`, `eval`,
each `name:` plus that component's config fields; `callbacks` is a list of such sections) and the
core sections `trainer` and `dist`. A task that uses several models takes `models:` instead of
`model:`, a mapping of model names to sections that may also say `frozen: true`, `source: RUN`
(load that run's weights; without `name:`, its model too) and `dtype: bf16` (frozen models only). Merge order: base files, then the file, then command-line
overrides, so overrides always win. Recipes are data: nothing in them is ever executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dataclasses
import re

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.config import DistConfig, Precision, TrainerConfig, build_config
from toolkit.errors import RecipeError, RegistryError
from toolkit.plugins import RecipeDir, Registries
from toolkit.registry import Component, closest

# section -> (registry kind, required); the model sections are read by _models
COMPONENT_SECTIONS: dict[str, tuple[str, bool]] = {
    "task": ("tasks", True),
    "loss": ("losses", False),
    "data": ("datasets", True),
    "optim": ("optimizers", True),
    "schedule": ("schedulers", False),
    "eval": ("evaluators", False),
}
CORE_SECTIONS: dict[str, type] = {"trainer": TrainerConfig, "dist": DistConfig}
ALL_SECTIONS = ["model", "models", *COMPONENT_SECTIONS, "callbacks", *CORE_SECTIONS]
SINGLE_MODEL = "model"  # the name of the one model of a `model:` section
MODEL_SLOT_KEYS = ("frozen", "source", "dtype")  # engine options of a `models:` entry
MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # names become file names: model-<name>.safetensors


@dataclass
class ComponentSpec:
    """A recipe section resolved to its registered component and typed config."""

    section: str
    component: Component
    config: Any

    def build(self, *args: Any, **kwargs: Any) -> Any:
        return self.component.factory(self.config, *args, **kwargs)


@dataclass
class ModelSpec:
    """One model of a recipe: a registered component, a run's weights, or a component plus weights."""

    name: str  # "model" for a `model:` section, else its key under `models:`
    component: ComponentSpec | None  # None: the model `source`'s recipe names is built
    frozen: bool = False
    source: str = ""  # a run or checkpoint directory whose weights the model starts from
    dtype: Precision = Precision.fp32  # frozen models may be kept in bf16


@dataclass
class Recipe:
    source: Path
    values: dict[str, Any]  # the fully resolved recipe, as saved in the run directory
    components: dict[str, ComponentSpec]  # every component section but the model(s)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    callbacks: list[ComponentSpec] = field(default_factory=list)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.values, sort_keys=False)


def find_recipe(name: str, recipe_dirs: list[RecipeDir], relative_to: Path | None = None) -> Path:
    """A recipe path from a file name, trying the given folder, the cwd, then plugins' recipe dirs.

    `openelm/tiny.yaml` is found in the folder the openelm plugin registered under `openelm`.
    """
    candidates = [Path(name)] if relative_to is None else [relative_to / name, Path(name)]
    for directory in recipe_dirs:
        candidate = directory.candidate(name)
        if candidate is not None:
            candidates.append(candidate)
    for candidate in list(candidates):
        if candidate.suffix not in (".yaml", ".yml"):
            candidates.append(candidate.with_name(candidate.name + ".yaml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in recipe_dirs) or "no plugin recipe dirs"
    suggestion = _closest_recipe(name, recipe_dirs, relative_to)
    listing = "toolkit-train --list-recipes lists the plugins' recipes"
    hint = f"did you mean '{suggestion}'? {listing}" if suggestion else f"looked in the current directory and {where}; {listing}"
    raise RecipeError(f"recipe file not found: {name}", hint=hint)


@dataclass(frozen=True)
class RecipeEntry:
    """One recipe a plugin ships, as `toolkit-train --list-recipes` shows it."""

    name: str  # what to type: `openelm/tiny`
    plugin: str
    path: Path
    summary: str  # the first sentence of the file's leading comment


def list_recipes(recipe_dirs: list[RecipeDir]) -> list[RecipeEntry]:
    """Every recipe file in the plugins' recipe folders, by the name that finds it."""
    entries = []
    for directory in recipe_dirs:
        if not directory.path.is_dir():
            continue
        for path in sorted([*directory.path.rglob("*.yaml"), *directory.path.rglob("*.yml")]):
            relative = path.relative_to(directory.path).with_suffix("").as_posix()
            name = f"{directory.namespace}/{relative}" if directory.namespace else relative
            entries.append(RecipeEntry(name, directory.plugin, path, _summary(path)))
    return entries


def _summary(path: Path) -> str:
    """The first sentence of a recipe's leading `#` comment, shortened to fit one line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    sentence = text.split(". ")[0].rstrip(".:")
    return sentence if len(sentence) <= 90 else sentence[:87].rstrip() + "..."


def _closest_recipe(name: str, recipe_dirs: list[RecipeDir], relative_to: Path | None) -> str | None:
    """The known recipe name (or a YAML file next to where `name` points) most like `name`."""
    typed_suffix = Path(name).suffix in (".yaml", ".yml")
    stem = str(Path(name).with_suffix("")) if typed_suffix else name
    known = {entry.name: entry.path.suffix for entry in list_recipes(recipe_dirs)}  # name -> its file's suffix
    # Files next to where the name points, named as the user would name them (from a `base:`, relative
    # to the recipe that names it).
    for root in [None, *([relative_to] if relative_to else [])]:
        folder = Path(name).parent if root is None else root / Path(name).parent
        if folder.is_dir():
            for path in folder.glob("*.y*ml"):
                shown = path if root is None else path.relative_to(root)
                known[str(shown.with_suffix(""))] = path.suffix
    suggestion = closest(stem, list(known))
    if suggestion is None:
        return None
    return f"{suggestion}{known[suggestion]}" if typed_suffix else suggestion


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = OmegaConf.load(path)
    except yaml.MarkedYAMLError as error:  # a syntax error: say where, as an editor would
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = error.problem or error.context or "syntax error"
        raise RecipeError(f"{where}: not valid YAML: {problem}",
                          hint=f"{error.context} at line {error.context_mark.line + 1}"
                          if error.context and error.context_mark and error.problem else None) from error
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecipeError(f"{path}: not valid YAML: {first_line}") from error
    container = OmegaConf.to_container(loaded, resolve=False)
    if container is None:
        return {}
    if not isinstance(container, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(container).__name__}")
    return container


def _load_with_bases(path: Path, recipe_dirs: list[RecipeDir], chain: tuple[Path, ...] = ()) -> Any:
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


def parse_overrides(overrides: list[str]) -> Any:
    """`section.key=value` strings as one OmegaConf mapping (values read as YAML); RecipeError,
    one line, for an item without `=` or a value that is not YAML."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"override '{item}' is not of the form section.key=value")
    # `key=` means the empty string, as in Hydra (OmegaConf alone reads it as null); `key=null`
    # still gives None.
    overrides = [f"{item}''" if item.endswith("=") else item for item in overrides]
    parsed = OmegaConf.create({})
    for item in overrides:
        try:
            parsed = OmegaConf.merge(parsed, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as error:
            raise RecipeError(f"bad override: {error}".splitlines()[0]) from error
        except yaml.YAMLError as error:  # the value is read as YAML: `{a:[b]}` is not a mapping there
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            mark = getattr(error, "problem_mark", None)
            column = f" at column {mark.column + 1} of the value" if mark is not None else ""
            raise RecipeError(f"override '{item}': the value is not valid YAML ({problem}{column})",
                              hint="in a flow mapping put a space after each colon ({key: [a, b]}), "
                                   "or quote the value") from error
    return parsed


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


def _model_spec(name: str, values: Any, registries: Registries, path: Path) -> ModelSpec:
    section = f"models.{name}"
    if not MODEL_NAME.match(name):
        raise RecipeError(f"{path}: {section}: a model name must be letters, digits and '_', starting with a letter")
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: {section}: expected a mapping with 'name:' or 'source:', got {values!r}")
    options = dict(values)
    slot = {key: options.pop(key) for key in MODEL_SLOT_KEYS if key in options}
    frozen, source, dtype = slot.get("frozen", False), slot.get("source", ""), slot.get("dtype", "fp32")
    if not isinstance(frozen, bool):
        raise RecipeError(f"{path}: {section}.frozen: expected true or false, got {frozen!r}")
    if not isinstance(source, str):
        raise RecipeError(f"{path}: {section}.source: expected a run or checkpoint directory, got {source!r}")
    if dtype not in {member.value for member in Precision}:
        raise RecipeError(f"{path}: {section}.dtype: '{dtype}' is not fp32 or bf16")
    if dtype == Precision.bf16 and not frozen:
        raise RecipeError(f"{path}: {section}.dtype: only a frozen model is kept in bf16",
                          hint="a trained model's precision is trainer.precision (bf16 autocast)")
    if options.get("name") is None:
        options.pop("name", None)  # `name: null` drops a name a base recipe gave
        if not source:
            raise RecipeError(f"{path}: {section} needs a 'name:' (a registered model) or a 'source:' (a run)",
                              hint=f"known models: {', '.join(registries['models'].names())}")
        if options:
            raise RecipeError(f"{path}: {section}: options {sorted(options)} need a 'name:'; "
                              "a model built from its 'source:' takes that run's config")
        return ModelSpec(name, None, frozen, source, Precision(dtype))
    component = _component(section, "models", options, registries)
    clashes = sorted(set(MODEL_SLOT_KEYS) & set(_config_fields(component)))
    if clashes:
        raise RecipeError(f"{path}: {section}: model '{options['name']}' has config fields {clashes}, which "
                          "the engine reserves in a 'models:' entry", hint="use the single 'model:' section")
    return ModelSpec(name, component, frozen, source, Precision(dtype))


def _config_fields(spec: ComponentSpec) -> list[str]:
    config_class = spec.component.config_class
    return [f.name for f in dataclasses.fields(config_class)] if config_class is not None else []


def _models(values: dict[str, Any], registries: Registries, path: Path) -> dict[str, ModelSpec]:
    single, several = values.get("model"), values.get("models")
    if single is not None and several is not None:
        raise RecipeError(f"{path}: has both 'model:' and 'models:'", hint="name every model under 'models:'")
    if single is not None:
        return {SINGLE_MODEL: ModelSpec(SINGLE_MODEL, _component("model", "models", single, registries))}
    if several is None:
        raise RecipeError(f"{path}: recipe has no 'model' section",
                          hint=f"known models: {', '.join(registries['models'].names())}")
    if not isinstance(several, dict) or not several:
        raise RecipeError(f"{path}: 'models:' must map model names to sections")
    # An entry set to null is removed: how a recipe drops a model its base names (models.teacher=null).
    specs = {str(name): _model_spec(str(name), entry, registries, path)
             for name, entry in several.items() if entry is not None}
    if not specs:
        raise RecipeError(f"{path}: 'models:' names no model")
    if all(spec.frozen for spec in specs.values()):
        raise RecipeError(f"{path}: every model under 'models:' is frozen: nothing would be trained")
    return specs


def load_recipe(name: str, overrides: list[str], registries: Registries) -> Recipe:
    """Read, inherit, override, resolve and validate a recipe."""
    path = find_recipe(name, registries.recipe_dirs)
    merged = OmegaConf.merge(_load_with_bases(path, registries.recipe_dirs), parse_overrides(overrides))
    try:
        values = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as error:
        raise RecipeError(f"{path}: {str(error).splitlines()[0]}") from error
    if "grid" in values and "prices" in values:  # a toolkit-bench sweep passed to toolkit-train
        raise RecipeError(f"{path}: a toolkit-bench sweep, not a recipe", hint=f"run it with toolkit-bench {name}")
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
    models = _models(values, registries, path)
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
    return Recipe(path, values, components, models, callbacks, core["trainer"], core["dist"])
