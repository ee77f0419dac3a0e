"""The oracle: which routing pattern (one choice per layer) gives the lowest loss under a budget.

A pattern is one of big / small / skip per layer (3^L patterns; 2^L without skip), applied to
every token of a sequence. The budget `max_big` caps how many layers use the big FFN. Exhaustive
search scores every pattern on every token, batched as a tree: the hidden state after layer k
depends only on the first k choices, so the states of all 3^k prefixes are computed once, layer
by layer, each layer running attention once per prefix and each FFN once per prefix, instead of
3^L full forwards. The last layer's leaves are not written out: each block of its rows goes
through attention and both FFNs, and its children go through the final norm and head while in
cache. From the per-token losses [P, N, S] it reads, per budget:

    corpus       the best pattern for all sequences together (what the `oracle` router applies)
    sequence     the best pattern for each sequence
    token        the best pattern for each token position (each scored with the whole sequence
                 routed by that pattern: the oracle's lower bound, not a causal router)

When L is too large (`max_exhaustive_layers`), beam search finds corpus patterns per budget: it
grows prefixes layer by layer, scores each prefix completed with small FFNs by a full forward,
and keeps the `beam_width` best.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from plugins.duo.routers import BIG, CHOICE_NAMES, SKIP, SMALL, FixedRouter
from plugins.duo.token_loss import token_cross_entropy

IGNORE_INDEX = -100


@dataclass
class OracleSearchConfig:
    """How the oracle searches."""

    allow_skip: bool = True  # 3^L patterns; False: big or small only, 2^L
    method: str = "auto"  # exhaustive, beam, or auto: exhaustive up to max_exhaustive_layers
    max_exhaustive_layers: int = 8
    beam_width: int = 8
    chunk_sequences: int = 2  # sequences whose pattern tree is expanded together (memory: 3^L states each)
    max_rows: int = 128  # sequence rows per attention / FFN call
    max_head_tokens: int = 1024  # tokens per output-head call (whole sequences, at least one), so the float32 logits stay in cache
    precision: str = "float32"  # or bfloat16 (CPU autocast; losses in float32)

    def __post_init__(self) -> None:
        if self.method not in ("auto", "exhaustive", "beam"):
            raise ValueError(f"method must be auto, exhaustive or beam, got '{self.method}'")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, got '{self.precision}'")
        if min(self.beam_width, self.chunk_sequences, self.max_rows, self.max_head_tokens) < 1:
            raise ValueError("beam_width, chunk_sequences, max_rows and max_head_tokens must be >= 1")


@dataclass
class OracleResult:
    """Patterns [P, L] (codes), their per-token losses [P, N, S] (exhaustive only) and per-budget bests."""

    method: str
    patterns: torch.Tensor
    token_losses: torch.Tensor | None
    budgets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_patterns(self) -> int:
        return self.patterns.shape[0]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "num_layers": self.patterns.shape[1], "num_patterns": self.num_patterns,
                "budgets": self.budgets}


def pattern_names(codes) -> list[str]:
    return [CHOICE_NAMES[int(code)] for code in codes]


def all_patterns(num_layers: int, allow_skip: bool) -> torch.Tensor:
    """Every pattern [P, L], the first layer the most significant digit (the tree's leaf order)."""
    choices = (BIG, SMALL, SKIP) if allow_skip else (BIG, SMALL)
    return torch.tensor(list(itertools.product(choices, repeat=num_layers)), dtype=torch.long)


def _autocast(config: OracleSearchConfig, device: torch.device):
    enabled = config.precision == "bfloat16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _head_losses(model, states: torch.Tensor, labels: torch.Tensor, head_columns: torch.Tensor,
                 logits_buffer: torch.Tensor) -> torch.Tensor:
    """Cross-entropy [..., S] of final hidden states [..., S, D] against labels broadcast to [..., S].

    head_columns [D, V] is the output head, transposed, in the dtype the logits are computed in;
    the logits go into logits_buffer [>= tokens, V] (a fresh tensor per call would cost its page
    faults). Called on a few thousand tokens at a time so that the logits stay in cache, and scored
    in their own dtype by token_loss.py's compiled pass (PyTorch's CPU cross-entropy on float32
    logits was half of the oracle's time).
    """
    normed = model.norm(states).to(head_columns.dtype)  # [..., S, D]
    tokens = normed.shape[:-1].numel()
    logits = torch.matmul(normed.reshape(tokens, -1), head_columns, out=logits_buffer[:tokens])  # [T, V]
    targets = labels.expand(normed.shape[:-1])
    per_token = token_cross_entropy(logits, targets.flatten(), IGNORE_INDEX)
    return per_token.view(targets.shape).to(states.device)


def _attention_step(layer, part: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [r, S, D] -> (the residual after attention, its FFN input), both [r, S, D]."""
    after_attention = part + layer.attn(layer.attn_norm(part), cos, sin)
    return after_attention, layer.ffn_norm(after_attention)


def _expand_layer(layer, states: torch.Tensor, cos, sin, allow_skip: bool, max_rows: int) -> torch.Tensor:
    """States [M, n, S, D] before `layer` -> [M * C, n, S, D] after it, child m * C + c taking choice c."""
    prefixes, rows, seq, dim = states.shape
    choices = 3 if allow_skip else 2
    flat = states.reshape(prefixes * rows, seq, dim)
    children = flat.new_empty(prefixes * rows, choices, seq, dim)
    for start in range(0, flat.shape[0], max_rows):
        after_attention, normed = _attention_step(layer, flat[start:start + max_rows], cos, sin)
        children[start:start + max_rows, BIG] = after_attention + layer.ffn(normed)
        children[start:start + max_rows, SMALL] = after_attention + layer.small_ffn(normed)
        if allow_skip:
            children[start:start + max_rows, SKIP] = after_attention
    # [M, n, C, S, D] -> [M, C, n, S, D]: prefix-major, then choice, as the leaf order wants.
    return children.view(prefixes, rows, choices, seq, dim).transpose(1, 2).reshape(prefixes * choices, rows, seq, dim)


def _score_last_layer(model, states: torch.Tensor, labels: torch.Tensor, cos, sin,
                      config: OracleSearchConfig) -> torch.Tensor:
    """Per-token losses [M * C, n, S] of the leaves under the last layer, states [M, n, S, D] before it.

    The same as expanding the last layer and scoring its leaves, without writing the leaves: each
    block of rows goes through attention and both FFNs, and each child is scored while its states
    are still in cache (the leaves of 2 sequences are 380 MB of float32).
    """
    layer = model.layers[-1]
    prefixes, rows, seq, dim = states.shape
    choices = 3 if config.allow_skip else 2
    flat = states.reshape(prefixes * rows, seq, dim)
    row_labels = labels.repeat(prefixes, 1)  # [M * n, S], row m * n + j holds sequence j
    losses = torch.empty(prefixes * rows, choices, seq, device=states.device)
    head_rows = max(1, config.max_head_tokens // seq)
    head = model.token_embeddings.weight if model.lm_head is None else model.lm_head.weight  # [V, D]
    logits_dtype = torch.bfloat16 if config.precision == "bfloat16" else head.dtype  # what autocast would give
    head_columns = head.detach().to(logits_dtype).t()  # [D, V]
    logits_buffer = torch.empty(head_rows * seq, head.shape[0], dtype=logits_dtype, device=states.device)
    for start in range(0, flat.shape[0], config.max_rows):
        after_attention, normed = _attention_step(layer, flat[start:start + config.max_rows], cos, sin)
        outputs = {BIG: layer.ffn(normed), SMALL: layer.small_ffn(normed)}  # each [r, S, D]
        for first in range(0, after_attention.shape[0], head_rows):
            base = after_attention[first:first + head_rows]  # [h, S, D]
            rows_done = slice(start + first, start + first + base.shape[0])
            for choice in range(choices):
                leaf = base if choice == SKIP else base + outputs[choice][first:first + head_rows]
                losses[rows_done, choice] = _head_losses(model, leaf, row_labels[rows_done], head_columns,
                                                         logits_buffer)
    # [M, n, C, S] -> [M, C, n, S], the leaf order.
    return losses.view(prefixes, rows, choices, seq).transpose(1, 2).reshape(prefixes * choices, rows, seq)


@torch.no_grad()
def exhaustive_token_losses(model, input_ids: torch.Tensor, labels: torch.Tensor,
                            config: OracleSearchConfig) -> torch.Tensor:
    """Per-token losses [P, N, S] of every pattern (all_patterns order), by tree expansion."""
    sequences, seq = input_ids.shape
    cos, sin = model._rope(seq)
    num_patterns = (3 if config.allow_skip else 2) ** len(model.layers)
    losses = torch.empty(num_patterns, sequences, seq)
    with _autocast(config, input_ids.device):
        for start in range(0, sequences, config.chunk_sequences):
            ids = input_ids[start:start + config.chunk_sequences]
            states = model.token_embeddings(ids)[None]  # [1, n, S, D]
            for layer in model.layers[:-1]:
                states = _expand_layer(layer, states, cos, sin, config.allow_skip, config.max_rows)
            chunk_labels = labels[start:start + config.chunk_sequences]
            losses[:, start:start + ids.shape[0]] = _score_last_layer(model, states, chunk_labels, cos, sin, config).cpu()
    return losses


@torch.no_grad()
def score_patterns(model, input_ids: torch.Tensor, labels: torch.Tensor, patterns: torch.Tensor,
                   config: OracleSearchConfig | None = None) -> torch.Tensor:
    """Per-token losses [P, N, S], one full forward per pattern (the reference; beam search uses it)."""
    config = config or OracleSearchConfig()
    original = model.router
    losses = torch.empty(patterns.shape[0], *input_ids.shape)
    try:
        for index, pattern in enumerate(patterns):
            model.set_router(FixedRouter(pattern_names(pattern)))
            with _autocast(config, input_ids.device):
                logits = model(input_ids)  # [N, S, V]
            keep = labels != IGNORE_INDEX
            per_token = F.cross_entropy(logits.flatten(0, 1), torch.where(keep, labels, 0).flatten(), reduction="none")
            losses[index] = (per_token.view(labels.shape) * keep).cpu()
    finally:
        model.set_router(original)
    return losses


def summarize(patterns: torch.Tensor, token_losses: torch.Tensor, keep: torch.Tensor) -> list[dict[str, Any]]:
    """Per budget (max_big = 0..L): the corpus, per-sequence and per-token bests (see the module docstring)."""
    num_layers = patterns.shape[1]
    keep = keep.float()  # [N, S]
    big_counts = (patterns == BIG).sum(dim=1)  # [P]
    sequence_losses = token_losses.sum(dim=2) / keep.sum(dim=1).clamp(min=1)  # [P, N]
    corpus_losses = token_losses.sum(dim=(1, 2)) / keep.sum().clamp(min=1)  # [P]
    budgets = []
    for max_big in range(num_layers + 1):
        allowed = big_counts <= max_big  # [P]
        best = int(corpus_losses.masked_fill(~allowed, float("inf")).argmin())
        sequence_best = sequence_losses.masked_fill(~allowed[:, None], float("inf")).min(dim=0)  # [N]
        token_best = token_losses.masked_fill(~allowed[:, None, None], float("inf")).min(dim=0)  # [N, S]
        token_big = big_counts[token_best.indices].float()  # [N, S] big layers of each token's best
        budgets.append({
            "max_big": max_big,
            "best_pattern": pattern_names(patterns[best]),
            "loss": float(corpus_losses[best]),
            "sequence_oracle_loss": float(sequence_best.values.mean()),
            "token_oracle_loss": float((token_best.values * keep).sum() / keep.sum().clamp(min=1)),
            "sequence_patterns": [pattern_names(patterns[i]) for i in sequence_best.indices.tolist()],
            "sequence_big_share_by_layer": (patterns[sequence_best.indices] == BIG).float().mean(dim=0).tolist(),
            "token_big_layers_by_position": ((token_big * keep).sum(0) / keep.sum(0).clamp(min=1)).tolist(),
        })
    return budgets


def beam_search(model, input_ids: torch.Tensor, labels: torch.Tensor, config: OracleSearchConfig) -> OracleResult:
    """Corpus-level best pattern per budget by beam search (prefixes completed with small FFNs)."""
    num_layers = len(model.layers)
    choices = (BIG, SMALL, SKIP) if config.allow_skip else (BIG, SMALL)
    keep = labels != IGNORE_INDEX
    cache: dict[tuple, float] = {}

    def corpus_loss(pattern: tuple) -> float:
        if pattern not in cache:
            losses = score_patterns(model, input_ids, labels, torch.tensor([pattern]), config)
            cache[pattern] = float(losses.sum() / keep.sum().clamp(min=1))
        return cache[pattern]

    budgets = []
    for max_big in range(num_layers + 1):
        beams: list[tuple] = [()]
        for depth in range(num_layers):
            candidates = [prefix + (choice,) for prefix in beams for choice in choices
                          if sum(c == BIG for c in prefix + (choice,)) <= max_big]
            fill = (SMALL,) * (num_layers - depth - 1)
            candidates.sort(key=lambda prefix: corpus_loss(prefix + fill))
            beams = candidates[:config.beam_width]
        best = min(beams, key=corpus_loss)
        budgets.append({"max_big": max_big, "best_pattern": pattern_names(best), "loss": corpus_loss(best)})
    scored = torch.tensor(sorted(cache), dtype=torch.long)
    return OracleResult("beam", scored, None, budgets)


def search(model, input_ids: torch.Tensor, labels: torch.Tensor, config: OracleSearchConfig | None = None) -> OracleResult:
    """The oracle over `input_ids`, `labels` [N, S] (labels -100 where ignored), in eval mode."""
    config = config or OracleSearchConfig()
    model.eval()
    num_layers = len(model.layers)
    method = config.method
    if method == "auto":
        method = "exhaustive" if num_layers <= config.max_exhaustive_layers else "beam"
    if method == "beam":
        return beam_search(model, input_ids, labels, config)
    patterns = all_patterns(num_layers, config.allow_skip)
    token_losses = exhaustive_token_losses(model, input_ids, labels, config)
    return OracleResult("exhaustive", patterns, token_losses,
                        summarize(patterns, token_losses, (labels != IGNORE_INDEX).cpu()))
