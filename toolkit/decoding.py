"""Decoding paths: a registered component that wraps a loaded model to run it another way.

    toolkit-generate RUN --decoder sparse --decoder-options '{active: relu}'
    toolkit-eval perplexity --model RUN --decoder sparse --decoder-options '{active: relu}'

A plugin registers `factory(config, model) -> nn.Module` with `register_decoders` (hookspecs.py).
Both commands take the same two options and build the wrapper here, so what `toolkit-generate`
times is what `toolkit-eval` scores. Options are read as YAML like recipe overrides and checked
against the decoder's config dataclass; anything wrong is one line (RecipeError, exit 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import RecipeError

if TYPE_CHECKING:  # torch is imported by whoever has a model to wrap
    from torch import nn

DECODER_OPTIONS_FLAG = "--decoder-options"


def mapping_option(flag: str, text: str, example: str) -> dict[str, Any]:
    """A command-line option's YAML flow mapping (`'{key: value}'`) as a dict; one line when it is not one."""
    from omegaconf import OmegaConf

    from toolkit.recipe import parse_overrides

    key = flag.lstrip("-").replace("-", "_")
    value = OmegaConf.to_container(parse_overrides([f"{key}={text}"]))[key]
    if not isinstance(value, dict):
        raise RecipeError(f"{flag}: '{text}' is not a mapping; give one like '{example}'")
    return value


def check_decoder_arguments(name: str | None, options_text: str) -> None:
    """`--decoder-options` without `--decoder` is refused (before anything is loaded)."""
    if name is None and options_text.strip() not in ("", "{}"):
        raise RecipeError(f"{DECODER_OPTIONS_FLAG} needs --decoder")


def build_decoder(name: str, options_text: str, model: nn.Module) -> nn.Module:
    """`model` wrapped by the registered decoder `name`, configured by `options_text` (YAML mapping)."""
    from toolkit.config import build_config
    from toolkit.plugins import get_registries

    component = get_registries()["decoders"].get(name)
    options = mapping_option(DECODER_OPTIONS_FLAG, options_text or "{}", "{key: value}")
    config = build_config(component.config_class, options, DECODER_OPTIONS_FLAG) if component.config_class else None
    if config is None and options:
        raise RecipeError(f"{DECODER_OPTIONS_FLAG}: decoder '{name}' takes no options, got {sorted(options)}")
    return component.factory(config, model)


def decoding_report(model: Any) -> str | None:
    """The wrapper's one-line account of what it did, if it keeps one."""
    from toolkit.capabilities import ReportsDecoding  # imports torch, which this module leaves to callers

    return model.decoding_report() if isinstance(model, ReportsDecoding) else None
