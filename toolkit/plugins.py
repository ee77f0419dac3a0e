"""The plugin manager: loads plugins from the `toolkit` entry-point group and fills the registries.

Set `TOOLKIT_PLUGINS` to a comma-separated list of entry-point names to load only those (an empty
value loads none); unset, every installed plugin loads.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from toolkit import hookspecs
from toolkit.errors import PluginError, ToolkitError
from toolkit.registry import Registry

ENTRY_POINT_GROUP = "toolkit"
PLUGINS_ENV_VAR = "TOOLKIT_PLUGINS"

# Component kinds, each filled by the hook `register_<kind>`.
KINDS = (
    "models",
    "losses",
    "datasets",
    "tasks",
    "routers",
    "decoders",
    "optimizers",
    "schedulers",
    "evaluators",
    "callbacks",
    "model_importers",
    "rewards",
)


@dataclass
class PluginInfo:
    """What `toolkit-plugins` shows about one loaded plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None


@dataclass(frozen=True)
class RecipeDir:
    """A folder of recipes a plugin ships, optionally under a name prefix.

    With `namespace="openelm"`, the recipe name `openelm/tiny.yaml` is the file `path/tiny.yaml`:
    the plugin keeps its recipes in its own package while users type the family's name.
    Without a namespace every name is looked up under `path` as given.
    """

    path: Path
    namespace: str = ""
    plugin: str = ""

    def candidate(self, name: str) -> Path | None:
        """Where `name` would be in this folder, or None when the name is outside its namespace."""
        if not self.namespace:
            return self.path / name
        prefix = f"{self.namespace}/"
        return self.path / name[len(prefix):] if name.startswith(prefix) else None

    def __str__(self) -> str:
        return f"{self.namespace}/ -> {self.path}" if self.namespace else str(self.path)


@dataclass
class Registries:
    """Every registry plus the recipe directories plugins contributed."""

    kinds: dict[str, Registry]
    recipe_dirs: list[RecipeDir] = field(default_factory=list)
    plugins: list[PluginInfo] = field(default_factory=list)

    def __getitem__(self, kind: str) -> Registry:
        return self.kinds[kind]


def _allowed_names() -> set[str] | None:
    value = os.environ.get(PLUGINS_ENV_VAR)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def make_plugin_manager() -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """A plugin manager with every allowed entry-point plugin loaded."""
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    allowed = _allowed_names()
    infos: list[PluginInfo] = []
    entry_points = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name
    )
    seen: set[str] = set()
    for entry_point in entry_points:
        if entry_point.name in seen or (allowed is not None and entry_point.name not in allowed):
            continue
        seen.add(entry_point.name)
        try:
            manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=entry_point.name)
        except Exception as error:  # any import-time failure of someone else's code
            raise PluginError(
                f"plugin '{entry_point.name}' ({entry_point.value}) failed to import: "
                f"{type(error).__name__}: {error}",
                hint=f"fix or uninstall it, or leave it out with {PLUGINS_ENV_VAR}",
            ) from error
        distribution = entry_point.dist
        infos.append(
            PluginInfo(
                name=entry_point.name,
                module=entry_point.value,
                distribution=distribution.metadata["Name"] if distribution else None,
                version=distribution.version if distribution else None,
            )
        )
    return manager, infos


def collect_registries(manager: pluggy.PluginManager, infos: list[PluginInfo]) -> Registries:
    """Call each plugin's register hooks one plugin at a time, so every entry knows its owner."""
    registries = Registries(kinds={kind: Registry(kind) for kind in KINDS}, plugins=infos)
    for kind in KINDS:
        hook = getattr(manager.hook, f"register_{kind}")
        for implementation in hook.get_hookimpls():
            plugin_name = implementation.plugin_name
            registry = registries.kinds[kind]

            def register(name, factory, config=None, _registry=registry, _plugin=plugin_name):
                _registry.add(name, factory, config, _plugin)

            _call_hook(implementation, plugin_name, kind, register)
    for implementation in manager.hook.register_recipe_dirs.get_hookimpls():
        plugin_name = implementation.plugin_name

        def register_dir(path, namespace: str = "", _plugin=plugin_name):
            _add_recipe_dir(registries.recipe_dirs, RecipeDir(Path(path), str(namespace).strip("/"), _plugin))

        _call_hook(implementation, plugin_name, "recipe_dirs", register_dir)
    return registries


def _add_recipe_dir(recipe_dirs: list[RecipeDir], new: RecipeDir) -> None:
    # A namespace names one family, as a component name names one component: two plugins
    # claiming it would make `openelm/tiny.yaml` mean whichever loaded first.
    for existing in recipe_dirs:
        if new.namespace and existing.namespace == new.namespace and existing.plugin != new.plugin:
            raise PluginError(
                f"recipe namespace '{new.namespace}/' is registered by both plugin '{existing.plugin}' "
                f"({existing.path}) and plugin '{new.plugin}' ({new.path})",
                hint="a plugin registers its recipes under its own namespace",
            )
    recipe_dirs.append(new)


def _call_hook(implementation, plugin_name: str, kind: str, register) -> None:
    try:
        implementation.function(register=register)
    except ToolkitError:
        raise
    except Exception as error:
        raise PluginError(
            f"plugin '{plugin_name}' failed in register_{kind}: {type(error).__name__}: {error}"
        ) from error


_cached: Registries | None = None


def get_registries(refresh: bool = False) -> Registries:
    """The registries of the installed plugins, loaded once per process."""
    global _cached
    if _cached is None or refresh:
        manager, infos = make_plugin_manager()
        _cached = collect_registries(manager, infos)
    return _cached
