"""Model importers: the registry kind they fill, and how `importer_for` picks one."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from toolkit.errors import CheckpointError, PluginError
from toolkit.importers import ModelImporter, importer_for
from toolkit.plugins import KINDS, Registries
from toolkit.registry import Registry


class SuffixImporter:
    """Claims files with one suffix; loads a one-layer model."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.description = f"a {suffix} file"

    def recognizes(self, path: Path) -> bool:
        return path.suffix == self.suffix

    def load(self, path: Path) -> nn.Module:
        return nn.Linear(2, 2)


def registries_with(*importers: tuple[str, object, str]) -> Registries:
    registries = Registries(kinds={kind: Registry(kind) for kind in KINDS})
    for name, importer, plugin in importers:
        registries["model_importers"].add(name, importer, None, plugin)
    return registries


def test_model_importers_are_a_registry_kind_filled_by_a_hook():
    from toolkit import hookspecs

    assert "model_importers" in KINDS
    assert hookspecs.register_model_importers.__doc__.strip()


def test_the_importer_that_recognises_a_path_is_found():
    registries = registries_with(("pt", SuffixImporter(".pt"), "a"), ("bin", SuffixImporter(".bin"), "b"))
    found = importer_for(Path("weights.bin"), registries)
    assert found is not None and found.name == "bin" and found.plugin == "b"
    assert isinstance(found.factory, ModelImporter)
    assert importer_for(Path("weights.gguf"), registries) is None


def test_two_importers_claiming_one_path_is_an_error_naming_both():
    registries = registries_with(("first", SuffixImporter(".pt"), "a"), ("second", SuffixImporter(".pt"), "b"))
    with pytest.raises(CheckpointError) as caught:
        importer_for(Path("weights.pt"), registries)
    assert "'first' (plugin 'a')" in caught.value.message and "'second' (plugin 'b')" in caught.value.message


def test_an_importer_without_the_contract_is_named():
    registries = registries_with(("broken", lambda path: None, "c"))
    with pytest.raises(PluginError, match="plugin 'c' registered model importer 'broken'"):
        importer_for(Path("weights.pt"), registries)
