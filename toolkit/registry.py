"""Registries: for each kind of component, name -> (factory, config dataclass, owning plugin)."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

from toolkit.errors import RegistryError


@dataclass(frozen=True)
class Component:
    """One registered component: how to build it and who provided it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config_class: type | None
    plugin: str

    def make_config(self, **values: Any) -> Any:
        """The component's config dataclass filled with `values` (defaults elsewhere)."""
        if self.config_class is None:
            if values:
                raise RegistryError(f"{self.kind} '{self.name}' takes no options, got {sorted(values)}")
            return None
        return self.config_class(**values)


def closest(name: str, choices: list[str]) -> str | None:
    """The choice most like `name`, for did-you-mean hints, or None if none is close."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return matches[0] if matches else None


class Registry:
    """The components of one kind (models, losses, datasets, ...), keyed by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._components: dict[str, Component] = {}

    def add(self, name: str, factory: Callable[..., Any], config: type | None, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"plugin '{plugin}' registered a {self.kind[:-1]} with an empty or non-string name")
        if config is not None and not dataclasses.is_dataclass(config):
            raise RegistryError(
                f"plugin '{plugin}' registered {self.kind[:-1]} '{name}' with config={config!r}, "
                "which is not a dataclass"
            )
        existing = self._components.get(name)
        if existing is not None:
            raise RegistryError(
                f"{self.kind[:-1]} '{name}' is registered twice: by plugin '{existing.plugin}' "
                f"and by plugin '{plugin}'",
                hint="rename one of them, or restrict loaded plugins with TOOLKIT_PLUGINS",
            )
        self._components[name] = Component(self.kind, name, factory, config, plugin)

    def get(self, name: str) -> Component:
        component = self._components.get(name)
        if component is not None:
            return component
        known = sorted(self._components)
        suggestion = closest(str(name), known)
        hint = f"did you mean '{suggestion}'?" if suggestion else None
        listing = ", ".join(known) if known else "none (is the plugin that provides it installed?)"
        raise RegistryError(f"unknown {self.kind[:-1]} '{name}'; known {self.kind}: {listing}", hint=hint)

    def names(self) -> list[str]:
        return sorted(self._components)

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, c in self._components.items() if c.plugin == plugin)

    def __contains__(self, name: str) -> bool:
        return name in self._components

    def __len__(self) -> int:
        return len(self._components)
