"""Which FFN neurons are active at each decoding step: synthesized, or recorded ones from a file.

Real ReLU activations overlap between consecutive tokens ("aggregated sparsity", ReLU Strikes
Back; LLM in a flash's windowing relies on it). Without a relufied model's recordings, the benchmark
synthesizes patterns with a stated sparsity and overlap: each token activates exactly
round(active_fraction * F) neurons, of which round(overlap * that) are drawn from the previous
token's active set and the rest uniformly from the neurons that were not active then (a
conservative choice: no hot neurons beyond that overlap, so a longer window gains little).

Recorded patterns: an .npz file (loaded without pickle) with one boolean array `layer_{i}`
[tokens, F_i] per layer. `record_patterns` takes them from a relufied model reading real text
(the true ReLU pattern: activation != 0, token by token), `record_predicted_patterns` what its
low-rank predictors ask for on the same text, and `save_recorded` writes that file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from plugins.openelm.model import OpenELM
from plugins.sparse.stats import record_ffn
from toolkit.errors import DataError
from toolkit.files import atomic_writer


def synthesize(ffn_dims: list[int], tokens: int, active_fraction: float, overlap: float,
               seed: int = 0) -> list[list[torch.Tensor]]:
    """patterns[token][layer] = sorted LongTensor of the active neuron ids."""
    if not 0 < active_fraction <= 1 or not 0 <= overlap <= 1:
        raise DataError(f"active fraction {active_fraction} must lie in (0, 1], overlap {overlap} in [0, 1]")
    generator = torch.Generator().manual_seed(seed)
    patterns: list[list[torch.Tensor]] = [[] for _ in range(tokens)]
    for ffn_dim in ffn_dims:
        count = max(1, round(active_fraction * ffn_dim))
        kept_count = round(overlap * count)
        active = torch.randperm(ffn_dim, generator=generator)[:count]
        for token in range(tokens):
            if token:
                inactive = torch.ones(ffn_dim, dtype=torch.bool)
                inactive[active] = False
                kept = active[torch.randperm(count, generator=generator)[:kept_count]]
                pool = torch.nonzero(inactive).flatten()
                fresh = pool[torch.randperm(pool.numel(), generator=generator)[:count - kept_count]]
                active = torch.cat([kept, fresh])
            patterns[token].append(torch.sort(active).values)
    return patterns


def load_recorded(path: Path, ffn_dims: list[int]) -> list[list[torch.Tensor]]:
    """Patterns from an .npz of boolean masks `layer_{i}` [tokens, F_i] (see the module docstring)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            masks = [archive[f"layer_{index}"] for index in range(len(ffn_dims))]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: not an activation-pattern file with layer_0..layer_{len(ffn_dims) - 1} "
                        f"({type(error).__name__}: {error})") from error
    for index, (mask, ffn_dim) in enumerate(zip(masks, ffn_dims)):
        if mask.ndim != 2 or mask.shape[1] != ffn_dim or mask.shape[0] != masks[0].shape[0]:
            raise DataError(f"{path}: layer_{index} has shape {mask.shape}, expected [tokens, {ffn_dim}]")
    return [[torch.from_numpy(np.flatnonzero(mask[token])).to(torch.int64) for mask in masks]
            for token in range(masks[0].shape[0])]


def overlap_statistics(patterns: list[list[torch.Tensor]], ffn_dims: list[int], window: int) -> dict[str, float]:
    """Mean active fraction, mean fraction of a token's neurons active on the previous token, and on
    any of the previous `window` tokens (what a window of that length keeps resident)."""
    active, previous, windowed = [], [], []
    for layer, ffn_dim in enumerate(ffn_dims):
        for token in range(1, len(patterns)):
            ids = patterns[token][layer]
            active.append(ids.numel() / ffn_dim)
            before = [set(patterns[t][layer].tolist()) for t in range(max(0, token - window), token)]
            current = set(ids.tolist())
            previous.append(len(current & before[-1]) / max(len(current), 1))
            windowed.append(len(current & set().union(*before)) / max(len(current), 1))
    mean = lambda values: float(np.mean(values)) if values else 0.0  # noqa: E731
    return {"active_fraction": mean(active), "overlap_previous": mean(previous), f"overlap_window_{window}": mean(windowed)}


def record_patterns(model: OpenELM, input_ids: torch.Tensor) -> list[list[torch.Tensor]]:
    """The true active sets of a relufied `model` on input_ids [N, S]: per token (N * S, row after
    row), per layer, the sorted ids of the neurons whose activation is not zero."""
    if model.config.ffn_activation == "silu":
        raise DataError("recording ReLU patterns needs a relufied model; this one's FFN uses silu (nothing is zero)")
    _, activations, _ = record_ffn(model, input_ids)
    masks = [(activation != 0).flatten(0, 1) for activation in activations]  # [T, F_i] per layer
    return [[torch.nonzero(mask[token]).flatten() for mask in masks] for token in range(masks[0].shape[0])]


def record_predicted_patterns(model: OpenELM, input_ids: torch.Tensor, predictors: list) -> list[list[torch.Tensor]]:
    """What low-rank predictors (predictor.py) ask for on input_ids [N, S]: per token, per layer, the
    sorted ids of the neurons predicted active from that token's FFN input in a dense forward."""
    inputs, _, _ = record_ffn(model, input_ids)
    masks = [predictor.predict(hidden).flatten(0, 1) for predictor, hidden in zip(predictors, inputs)]  # [T, F_i]
    return [[torch.nonzero(mask[token]).flatten() for mask in masks] for token in range(masks[0].shape[0])]


def save_recorded(path: Path, patterns: list[list[torch.Tensor]], ffn_dims: list[int]) -> None:
    """Write `patterns` as the .npz `load_recorded` reads (atomically: the whole file or nothing)."""
    arrays = {}
    for layer, ffn_dim in enumerate(ffn_dims):
        mask = np.zeros((len(patterns), ffn_dim), dtype=bool)  # [T, F]
        for token, layers in enumerate(patterns):
            mask[token, layers[layer].numpy()] = True
        arrays[f"layer_{layer}"] = mask
    with atomic_writer(Path(path), "wb") as handle:
        np.savez(handle, **arrays)
