"""Model importers: the contract a plugin fulfils to read a foreign checkpoint format, and finding
the importer that reads a given path.

An importer turns a local file or directory in some other project's layout (for example a Hugging
Face directory of a family the toolkit implements itself) into the toolkit's own `nn.Module`, so
that what serves the toolkit's models (its KV cache, its evaluators) serves that checkpoint too.
Plugins register importers with the `register_model_importers` hook; tools that take a `--model`
path ask `importer_for(path)` before falling back to generic loaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import nn

from toolkit.errors import CheckpointError, PluginError
from toolkit.registry import Component

KIND = "model_importers"


@runtime_checkable
class ModelImporter(Protocol):
    """What `register_model_importers` registers: one format, recognised cheaply and loaded on demand."""

    # Names the format in messages, as a noun phrase: "a Hugging Face OpenELM directory".
    description: str

    def recognizes(self, path: Path) -> bool:
        """Whether `path` is in this importer's format. Reads at most small metadata files (a
        config.json), never the weights, and answers False rather than raising on foreign input."""
        ...

    def load(self, path: Path) -> nn.Module:
        """The model `path` holds, on the CPU in eval mode. Raises `CheckpointError` when `path` is in
        this format but incomplete or inconsistent (missing weights, shapes that disagree)."""
        ...


def importer_for(path: Path, registries=None) -> Component | None:
    """The registered importer that recognises `path`, or None when none does.

    Two importers claiming one path is an error naming both (their plugins should agree on who
    reads it). `registries` defaults to the installed plugins' registries.
    """
    if registries is None:
        from toolkit.plugins import get_registries

        registries = get_registries()
    registry = registries[KIND]
    claims = []
    for name in registry.names():
        component = registry.get(name)
        if not isinstance(component.factory, ModelImporter):
            raise PluginError(f"plugin '{component.plugin}' registered model importer '{name}', which lacks "
                              "description, recognizes(path) or load(path)")
        if component.factory.recognizes(path):
            claims.append(component)
    if len(claims) > 1:
        named = " and ".join(f"'{c.name}' (plugin '{c.plugin}')" for c in claims)
        raise CheckpointError(f"{path}: two model importers recognise it: {named}",
                              hint="uninstall one of the plugins, or leave it out with TOOLKIT_PLUGINS")
    return claims[0] if claims else None
