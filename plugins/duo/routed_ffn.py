"""The FFN step of a Duo block: each token through the big FFN, the small one, or neither.

Hard routes (random, fixed, oracle, a learned router at inference) gather the tokens of each FFN
with `index_select`, run the FFN on those rows only and put the results back with `index_copy`,
so a skipped token costs nothing and a small-routed one costs the small FFN. When every token
takes the same FFN the gather is skipped and the FFN runs on the tensor as it is, which is also
what makes all-big routing bit-identical to the plain OpenELM block.

Soft routes (a learned router in training) run both FFNs on every token and mix them with the
straight-through weights, since the router's gradient needs every branch's output.
"""

from __future__ import annotations

import torch
from torch import nn

from plugins.duo.routers import BIG, SMALL, Route
from plugins.openelm.kernels import swiglu_reference


def run_ffn(ffn: nn.Module, x: torch.Tensor, inference: bool) -> torch.Tensor:
    """An OpenELM FeedForward on x [..., D]; `inference` uses the plain-ops SwiGLU, as decoding does."""
    if inference:
        return ffn.proj_2(swiglu_reference(ffn.proj_1(x)))
    return ffn(x)


def routed_ffn(big: nn.Module, small: nn.Module, normed: torch.Tensor, route: Route,
               inference: bool = False) -> torch.Tensor | None:
    """The FFN update [B, S, D] for normed [B, S, D], or None when every token skips."""
    if route.weights is not None:
        weights = route.weights  # [B, S, 3]
        return (weights[..., BIG:BIG + 1] * run_ffn(big, normed, inference)
                + weights[..., SMALL:SMALL + 1] * run_ffn(small, normed, inference))
    flat = normed.reshape(-1, normed.shape[-1])  # [N, D]
    flat_choices = route.choices.reshape(-1)  # [N]
    total = flat.shape[0]
    output = None
    for code, ffn in ((BIG, big), (SMALL, small)):
        index = (flat_choices == code).nonzero().squeeze(1)  # [n] rows taking this FFN
        count = index.numel()
        if count == total:
            return run_ffn(ffn, normed, inference)
        if count == 0:
            continue
        part = run_ffn(ffn, flat.index_select(0, index), inference)  # [n, D]
        if output is None:
            output = part.new_zeros(total, part.shape[-1])
        output = output.index_copy(0, index, part)
    return None if output is None else output.view(normed.shape[:-1] + output.shape[-1:])
