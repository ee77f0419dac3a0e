"""Duo-LLM on OpenELM: every block keeps its attention and gets a big FFN, a small FFN and skip.

The blocks are OpenELM's (plugins.openelm.model.Block) with one more FFN, `small_ffn`, whose width
is the big one's divided by `small_ffn_ratio` (16 in the Duo-LLM paper); layer-wise widths are
kept for both. Per token and block a router (plugins.duo.routers) picks big, small or skip:

    x = x + attn(attn_norm(x))
    x = x + {ffn, small_ffn, 0}[route](ffn_norm(x))

Parameter names are OpenELM's plus `layers.{i}.small_ffn.*` and `router.*`, so an OpenELM
checkpoint loads into the big path (strict=False). The model runs through OpenELM's own
`forward` and `forward_step` (KV-cache decoding): the blocks reach the router through a shared,
unregistered `RoutingState`, so the router is registered once, as the model's `router`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from plugins.duo.routed_ffn import routed_ffn
from plugins.duo.routers import BIG, SMALL, Router, make_router
from plugins.openelm.config import LayerWidths, OpenELMConfig
from plugins.openelm.kv_cache import KVCache
from plugins.openelm.model import Block, FeedForward, OpenELM, matmul_flops_factor


@dataclass
class DuoConfig(OpenELMConfig):
    """An OpenELM with a small FFN beside each big one and a router choosing per token."""

    small_ffn_ratio: int = 16  # small FFN width = big FFN width // ratio (per layer)
    router: str = "random"  # a registered router (`toolkit-plugins` lists them)
    router_options: dict[str, Any] = field(default_factory=dict)  # that router's config
    # With `source: RUN` (a trained Duo run): the router starts fresh instead of being loaded from
    # the run (whose router may be another kind); every other tensor is still loaded strictly.
    fresh_router: bool = False
    train_only_router: bool = False  # everything but the router frozen (Duo-LLM's router stage)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.small_ffn_ratio < 1:
            raise ValueError(f"small_ffn_ratio must be >= 1, got {self.small_ffn_ratio}")
        if self.activation_checkpointing:
            # Recomputing a block in backward would draw a second, different random route.
            raise ValueError("activation_checkpointing is not supported by duo models")
        if self.ffn_activation != "silu" or self.relu_after_norm:
            # Duo's blocks and routed FFNs compute SwiGLU after plain norms (routed_ffn.py).
            raise ValueError("duo models are SwiGLU only: ffn_activation must be silu and relu_after_norm false")
        router = make_router(self.router, dict(self.router_options), self.num_layers)  # bad options fail at load
        router.bind(self.num_layers, self.model_dim)
        if self.train_only_router and not any(True for _ in router.parameters()):
            raise ValueError(f"train_only_router: the {self.router} router has no parameters to train "
                             "(use router: learned)")

    def small_layer_widths(self) -> list[LayerWidths]:
        """Each block's widths with the small FFN's width."""
        return [LayerWidths(w.num_query_heads, w.num_kv_heads, max(1, w.ffn_dim // self.small_ffn_ratio))
                for w in self.layer_widths()]


@dataclass
class DuoTinyConfig(DuoConfig):
    """The `openelm-tiny` shape (6 layers, width 256) with Duo FFNs."""

    max_context_length: int = 512


class RoutingState:
    """What the blocks share with the model: the router, and the last forward's choices per layer.

    Not an nn.Module, so the router is registered (and saved) once, by the model.
    """

    def __init__(self, router: Router, num_layers: int) -> None:
        self.router = router
        self.choices: list[torch.Tensor | None] = [None] * num_layers  # each [B, S]


class DuoBlock(Block):
    """An OpenELM block whose FFN step is routed: big FFN, small FFN or skip per token."""

    def __init__(self, config: DuoConfig, widths: LayerWidths, small_widths: LayerWidths, index: int,
                 routing: RoutingState) -> None:
        super().__init__(config, widths)
        self.small_widths = small_widths
        self.small_ffn = FeedForward(config, small_widths)
        self.index = index
        self.routing = routing

    def _ffn_step(self, x: torch.Tensor, normed: torch.Tensor, inference: bool) -> torch.Tensor:
        route = self.routing.router.route(self.index, normed)
        self.routing.choices[self.index] = route.choices.detach()
        update = routed_ffn(self.ffn, self.small_ffn, normed, route, inference)
        return x if update is None else x + update  # [B, S, D]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)  # [B, S, D]
        return self._ffn_step(x, self.ffn_norm(x), inference=False)

    def forward_step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layer: int,
                     mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        x = x + self.attn.forward_step(self.attn_norm.inference(x), cos, sin, cache, layer, mask, is_causal)
        return self._ffn_step(x, self.ffn_norm.inference(x), inference=True)


class DuoOpenELM(OpenELM):
    """`model(input_ids [B, S]) -> logits [B, S, V]`, routed by `model.router`."""

    def __init__(self, config: DuoConfig) -> None:
        super().__init__(config)
        router = make_router(config.router, dict(config.router_options), config.num_layers)
        router.bind(config.num_layers, config.model_dim)
        self.routing = RoutingState(router, config.num_layers)
        self.router = router
        small = config.small_layer_widths()
        self.layers = nn.ModuleList(
            DuoBlock(config, widths, small[index], index, self.routing)
            for index, widths in enumerate(config.layer_widths())
        )
        self.init_weights()  # the new blocks and the router, initialised like the rest
        if config.train_only_router:
            for name, parameter in self.named_parameters():
                parameter.requires_grad_(name.startswith("router."))

    def fresh_state_keys(self) -> list[str]:
        """The router's keys when `fresh_router` (toolkit.capabilities.FreshState): not read from a `source:`."""
        return [key for key in self.state_dict() if key.startswith("router.")] if self.config.fresh_router else []

    def set_router(self, router: Router) -> None:
        """Route with `router` from now on (for evaluation: same weights, another routing)."""
        router.bind(self.config.num_layers, self.config.model_dim)
        device = self.token_embeddings.weight.device
        self.router = router.to(device)
        self.routing.router = self.router

    def route_with(self, name: str, options: dict[str, Any], where: str = "router") -> None:
        """Route with the registered router `name` built from `options` (RecipeError when it does
        not fit); for decoding or evaluating the same weights under another routing."""
        self.set_router(make_router(name, options, self.config.num_layers, where))

    @contextlib.contextmanager
    def seeded(self, sample_seeds: torch.Tensor | None) -> Iterator[None]:
        """Inside the block, routers draw per sequence from `sample_seeds` [B] (None: unseeded)."""
        router = self.routing.router
        router.sample_seeds = None if sample_seeds is None else [int(seed) for seed in sample_seeds.tolist()]
        try:
            yield
        finally:
            router.sample_seeds = None

    def last_choices(self) -> torch.Tensor:
        """The choices of the last forward (or decoding step): [L, B, S] codes."""
        return torch.stack([choice for choice in self.routing.choices])

    def big_share(self) -> torch.Tensor:
        """Share of (layer, token) pairs of the last forward that used the big FFN (a 0-d tensor)."""
        return (self.last_choices() == BIG).float().mean()

    def flops_per_token(self, seq_len: int) -> float:
        """OpenELM's count with each FFN weighted by the share of tokens the last forward sent to it.

        The parent counts every parameter for every token; a routed token runs one FFN or none.
        (A learned router in training runs both FFNs densely; this counts the routed cost.)
        """
        total = super().flops_per_token(seq_len)
        if any(choices is None for choices in self.routing.choices):
            return total  # no forward yet: every FFN counted
        for layer, choices in zip(self.layers, self.routing.choices):
            for code, ffn in ((BIG, layer.ffn), (SMALL, layer.small_ffn)):
                unused = 1.0 - (choices == code).float().mean().item()
                total -= unused * sum(matmul_flops_factor(parameter) * parameter.numel() for parameter in ffn.parameters())
        return total

    def layer_summary(self) -> list[str]:
        lines = super().layer_summary()
        return [f"{line}, small ffn dim {layer.small_widths.ffn_dim}" for line, layer in zip(lines, self.layers)]


def build_duo_openelm(config: DuoConfig) -> DuoOpenELM:
    """The model factory: builds on the current default device (meta for dry runs)."""
    return DuoOpenELM(config)
