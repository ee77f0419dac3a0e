"""The `sparse` decoding path: `toolkit-generate` / `toolkit-eval --decoder sparse` on a relufied OpenELM.

    toolkit-generate runs/relufy-tiny --decoder sparse --decoder-options '{active: relu}'
    toolkit-generate runs/relufy-tiny --decoder sparse \\
        --decoder-options '{active: predictor, predictors: p.safetensors, bundle: ffn.bundle, dram_cap: 8000000, window: 5}'
    toolkit-eval perplexity --model runs/relufy-tiny --decoder sparse --decoder-options '{active: relu}'

Options (SparseDecodingConfig): which neurons each token computes (`active`: relu = the true
pattern read off the gate, predictor = a predictor file's guess, all = the dense FFN), and where
their weights come from: the model in DRAM, or with `bundle` a row-column-bundled file
(bundle.py; write one with `python -m plugins.sparse.write_bundle RUN PATH`) through a DRAM
neuron cache capped at `dram_cap` bytes keeping the last `window` tokens' neurons. `kernel` picks
how one token's active neurons are computed: `fused` (fused_ffn.py, compiled by numba: in place
from a neuron-major copy of the FFN in DRAM, or with a bundle from the cache's slots, where the
reads landed), `torch` (gather the rows, then two matmuls), or `auto` (fused where numba is
installed and the model is a float32 relu model on the CPU).

The wrapper keeps OpenELM's interface (`forward`, `make_cache`, `forward_step`). Steps of one
token are timed and counted (FFN neurons gathered, the cache's reads and hits); `decoding_report()`
turns that into the line the commands print: tokens/s, FFN bytes per token, hit rate, and with a
bundle the cost model's expected tokens/s from a measured positioned-read time. With a bundle
every call goes token by token (a whole sequence at once would ask the capped cache for the
union of its tokens' neurons, a path decoding never takes), so `toolkit-eval` scores exactly the
reads that are timed; the relu and predictor paths in DRAM score whole sequences, each token
with its own active set (the same arithmetic as decoding).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from plugins.openelm.model import OpenELM
from plugins.sparse.bundle import BundleError, BundleReader, layer_bytes, layer_parts
from plugins.sparse.cost_model import estimate, measure_reads
from plugins.sparse.fused_ffn import FusedPredictedPattern, FusedSparseFFN, available as fused_available
from plugins.sparse.neuron_cache import NeuronCache
from plugins.sparse.predictor import PredictedPattern
from plugins.sparse.predictor_file import load_predictors
from plugins.sparse.sparse_ffn import AllActive, SparseFFN, TruePattern
from toolkit.errors import RecipeError

ACTIVE_SETS = ("relu", "predictor", "all")
KERNELS = ("auto", "fused", "torch")
WHERE = "--decoder-options"
COST_MODEL_READS = 200  # positioned reads timed for the cost model's figure (a few milliseconds)


@dataclass
class SparseDecodingConfig:
    """`--decoder sparse --decoder-options '{...}'`."""

    active: str = "relu"  # relu (true pattern), predictor (needs predictors), all (dense FFN)
    predictors: str = ""  # predictor file (toolkit-eval relu_stats ... save_predictors=PATH)
    threshold: float = 0.0  # predicted active when sigmoid(logit) > threshold; 0: the file's
    bundle: str = ""  # FFN bundle file: weights served from it (python -m plugins.sparse.write_bundle)
    dram_cap: int = 0  # bytes of the DRAM neuron cache (needed with bundle)
    window: int = 5  # windowing: neurons used by the last k tokens stay cached
    read_threads: int = 1  # reads in flight at once
    coalesce_gap_bytes: int = 0  # one read across gaps of unneeded records up to this many bytes
    token_by_token: bool = False  # score sequences one token at a time (always so with a bundle)
    kernel: str = "auto"  # one token in DRAM: fused (numba), torch (gather + matmuls), auto (fused if it can)
    keep_model_ffn: bool = False  # with a bundle: keep the model's own FFN weights in DRAM too (relu_stats needs them)

    def __post_init__(self) -> None:
        if self.active not in ACTIVE_SETS:
            raise ValueError(f"active must be one of {', '.join(ACTIVE_SETS)}, got {self.active!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.kernel == "fused" and self.active == "all":
            raise ValueError("kernel: fused computes the active neurons; it goes with active: relu or predictor")
        if self.active == "predictor" and not self.predictors:
            raise ValueError("active: predictor needs predictors: PATH (a file relu_stats save_predictors= wrote)")
        if self.predictors and self.active != "predictor":
            raise ValueError(f"predictors: PATH is used with active: predictor, not active: {self.active}")
        if not 0.0 <= self.threshold < 1.0 or (self.threshold and self.active != "predictor"):
            raise ValueError(f"threshold must be in (0, 1) and goes with active: predictor, got {self.threshold}")
        if self.bundle and self.active == "all":
            raise ValueError("active: all runs the dense FFN from the model's own weights; "
                             "a bundle serves active: relu or active: predictor")
        if self.bundle and self.dram_cap < 1:
            raise ValueError(f"bundle: PATH needs dram_cap: BYTES >= 1 (the DRAM cache's cap), got {self.dram_cap}")
        if self.dram_cap and not self.bundle:
            raise ValueError("dram_cap caps the cache of FFN weights read from a file: give bundle: PATH too")
        if self.keep_model_ffn and not self.bundle:
            raise ValueError("keep_model_ffn goes with bundle: PATH (without one the model's FFN weights are what "
                             "decoding reads)")
        if self.window < 1 or self.read_threads < 1:
            raise ValueError(f"window and read_threads must be >= 1, got {self.window} and {self.read_threads}")
        if self.coalesce_gap_bytes < 0 or (self.coalesce_gap_bytes and not self.bundle):
            raise ValueError(f"coalesce_gap_bytes must be >= 0 and needs bundle: PATH, got {self.coalesce_gap_bytes}")


class SparseDecoder(nn.Module):
    """An OpenELM decoded with a SparseFFN, counting what each one-token step costs."""

    def __init__(self, model: OpenELM, source, cache: NeuronCache | None, description: str,
                 token_by_token: bool, fused: FusedSparseFFN | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.source = source
        self.neuron_cache = cache
        self.sparse_ffn = SparseFFN(model, source, cache, fused)
        self.description = description
        self.token_by_token = token_by_token or cache is not None
        weight = model.layers[0].ffn.proj_2.weight
        self.bytes_per_neuron = 3 * weight.shape[0] * weight.element_size()  # gate row, up row, down column
        self.ffn_dims = [layer.ffn.proj_2.weight.shape[1] for layer in model.layers]
        self.neurons = 0  # FFN neurons whose weights the one-token steps used
        self.steps, self.step_rows, self.seconds = 0, 0, 0.0
        self.sequence_tokens = 0  # tokens scored as whole sequences (not one-token steps)

    def _ffn_step(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        gathered, dense = self.sparse_ffn.neurons_read, self.sparse_ffn.dense_calls
        output = self.sparse_ffn(layer, hidden)
        self.neurons += (self.sparse_ffn.neurons_read - gathered) + \
            (self.sparse_ffn.dense_calls - dense) * self.ffn_dims[layer]
        return output

    def make_cache(self, batch_size: int, max_length: int, device=None, dtype: torch.dtype | None = None):
        return self.model.make_cache(batch_size, max_length, device, dtype)

    @torch.no_grad()
    def forward_step(self, input_ids: torch.Tensor, cache, attention_mask: torch.Tensor | None = None,
                     last_only: bool = False) -> torch.Tensor:
        """Logits [B, S, V] ([B, 1, V] with last_only) of input_ids [B, S] appended to `cache`."""
        length = input_ids.shape[1]
        if length == 1 or not self.token_by_token:
            return self._run(input_ids, cache, attention_mask, last_only)
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise RecipeError(f"{WHERE}: token-by-token sparse decoding takes no padded prompts; run rows one at a time")
        logits = [self._run(input_ids[:, index:index + 1], cache, None, False) for index in range(length)]
        return logits[-1] if last_only else torch.cat(logits, dim=1)  # [B, S, V]

    def _run(self, input_ids: torch.Tensor, cache, attention_mask: torch.Tensor | None, last_only: bool) -> torch.Tensor:
        if input_ids.shape[1] != 1:
            self.sequence_tokens += input_ids.numel()
            return self.model.forward_step(input_ids, cache, attention_mask, last_only, ffn_step=self.sparse_ffn)
        start = time.perf_counter()
        logits = self.model.forward_step(input_ids, cache, attention_mask, last_only, ffn_step=self._ffn_step)
        self.seconds += time.perf_counter() - start
        self.steps += 1
        self.step_rows = max(self.step_rows, input_ids.shape[0])
        return logits

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, S, V] of the sparse path for input_ids [B, S] (a fresh cache)."""
        return self.forward_step(input_ids, self.make_cache(input_ids.shape[0], input_ids.shape[1]))

    def figures(self) -> dict[str, float]:
        """Per one-token step: seconds, FFN bytes used, and (with a bundle) the cache's reads."""
        steps = max(self.steps, 1)
        figures = {"steps": self.steps, "rows_per_step": self.step_rows, "seconds": self.seconds,
                   "tokens_per_second": self.steps * max(self.step_rows, 1) / self.seconds if self.seconds else 0.0,
                   "ffn_bytes_per_step": self.neurons * self.bytes_per_neuron / steps,
                   "ffn_bytes_dense": sum(self.ffn_dims) * self.bytes_per_neuron,
                   "sequence_tokens": self.sequence_tokens}
        if self.neuron_cache is not None:
            summary = self.neuron_cache.stats.summary()
            figures.update(disk_bytes_per_step=summary["bytes_read"] / steps, hit_rate=summary["hit_rate"],
                           reads_per_step=summary["reads_issued"] / steps, mean_read_bytes=summary["mean_read_bytes"])
        return figures

    def cost_model_line(self) -> str | None:
        """The cost model's expected weight-fetch rate for the reads made, from reads timed now."""
        summary = self.neuron_cache.stats.summary() if self.neuron_cache is not None else None
        if not summary or not summary["reads_issued"]:
            return None
        read_bytes = max(int(round(summary["mean_read_bytes"])), 1)
        measured = measure_reads(self.neuron_cache.reader.path, read_bytes, COST_MODEL_READS, "random", cold=False)
        expected = estimate({**summary, "bytes_read_per_token": summary["bytes_read"] / max(self.steps, 1),
                             "reads_per_token": summary["reads_issued"] / max(self.steps, 1)}, measured)
        return (f"cost model: {expected.reads_per_token:.1f} reads/token x {expected.seconds_per_read * 1e6:.1f} us "
                f"(warm page cache, {read_bytes} B reads) = {expected.tokens_per_second:.0f} tokens/s for the weight fetch")

    def decoding_report(self) -> str:
        """One line: what this path did (see the module docstring)."""
        parts = [f"sparse decoding ({self.description})"]
        figures = self.figures()
        if self.steps:
            per = "token" if self.step_rows == 1 else f"step of {self.step_rows} rows"
            parts.append(f"{self.steps} one-token steps in {self.seconds:.3f} s = {figures['tokens_per_second']:.1f} "
                         f"tokens/s; FFN weights used per {per} {figures['ffn_bytes_per_step'] / 1e6:.3f} MB of "
                         f"{figures['ffn_bytes_dense'] / 1e6:.3f} MB dense")
        if self.neuron_cache is not None and self.steps:
            parts.append(f"read from disk per {per} {figures['disk_bytes_per_step'] / 1e6:.3f} MB, cache hit rate "
                         f"{figures['hit_rate']:.3f}")
            line = self.cost_model_line()
            if line:
                parts.append(line)
        if self.sequence_tokens:
            parts.append(f"{self.sequence_tokens} tokens run as whole sequences (a prefill, or scoring), each token "
                         "with its own active set")
        return "; ".join(parts)


def check_bundle_weights(reader: BundleReader, model: OpenELM) -> None:
    """The bundle must hold this model's FFN weights, in its dtype: compared by the header's checksums."""
    weight = model.layers[0].ffn.proj_1.weight
    if weight.device.type != "cpu":
        raise BundleError(f"{reader.path}: FFN weights from a bundle are served on the CPU; run with --device cpu")
    if reader.dtype != weight.dtype:
        raise BundleError(f"{reader.path}: holds {reader.header['dtype']} weights, the model computes in "
                          f"{str(weight.dtype).removeprefix('torch.')}")
    for index, (layer, stored) in enumerate(zip(model.layers, reader.layers)):
        parts = layer_parts(layer.ffn.proj_1.weight.detach(), layer.ffn.proj_2.weight.detach())
        if hashlib.sha256(layer_bytes(parts, reader.layout)).hexdigest() != stored.sha256:
            raise BundleError(f"{reader.path}: layer {index} holds other FFN weights than the model's",
                              hint="write the bundle from this run: python -m plugins.sparse.write_bundle RUN PATH")


def open_neuron_cache(config: SparseDecodingConfig, model: OpenELM) -> NeuronCache:
    shapes = [(layer.ffn.proj_2.weight.shape[0], layer.ffn.proj_2.weight.shape[1]) for layer in model.layers]
    reader = BundleReader(Path(config.bundle), expected_shapes=shapes, readahead=False)
    try:
        check_bundle_weights(reader, model)
        cache = NeuronCache(reader, config.dram_cap, config.window, config.read_threads, config.coalesce_gap_bytes)
    except BaseException:
        reader.close()
        raise
    widest = max(range(len(reader.layers)), key=lambda index: reader.layers[index].ffn_dim)
    if cache.num_slots < reader.layers[widest].ffn_dim:  # a cap below a layer is the point, but say what it risks
        print(f"warning: --decoder-options: dram_cap {config.dram_cap} holds {cache.num_slots} neurons, fewer than "
              f"layer {widest}'s {reader.layers[widest].ffn_dim}; a step that needs more of one layer's neurons at "
              "once stops decoding with an error", file=sys.stderr)
    return cache


def build_sparse_decoder(config: SparseDecodingConfig, model: nn.Module) -> SparseDecoder:
    """The registered decoder's factory: `model` (a relufied OpenELM) decoded sparsely."""
    if type(model) is not OpenELM:  # subclasses (Duo's routed FFNs) run other FFN steps
        raise RecipeError(f"--decoder sparse: the model is {type(model).__name__}; sparse decoding runs plain OpenELMs")
    if config.active == "relu" and model.config.ffn_activation == "silu":
        raise RecipeError(f"{WHERE}: active: relu needs a relufied model, and this one's FFN uses silu, which is "
                          "never exactly zero", hint="fine-tune it with sparse/relufy_tiny.yaml, or use active: all")
    runs_fused = fused_runs(config, model)  # the FFN kernel and the predictors' compiled loop go together
    if config.active == "predictor":
        predictors = load_predictors(Path(config.predictors), model, config.threshold or None)
        source = FusedPredictedPattern(predictors) if runs_fused else PredictedPattern(predictors)
        described = f"active=predictor {config.predictors} (rank {predictors[0].down.weight.shape[0]}, " \
                    f"threshold {predictors[0].threshold:g})"
    else:
        source = TruePattern(model) if config.active == "relu" else AllActive()
        # the oracle finds the pattern by computing every gate row: bytes it reads beyond those counted
        described = "active=relu (oracle: reads every gate row)" if config.active == "relu" else "active=all"
    cache = open_neuron_cache(config, model) if config.bundle else None
    fused = fused_kernel(config, model, cache)  # before a release: the DRAM bundles copy the model's weights
    if cache is not None:
        described += f", FFN weights from {config.bundle} under a {config.dram_cap}-byte DRAM cap, window {config.window}"
        if not config.keep_model_ffn:
            freed = release_ffn_weights(model, keep_gate=config.active == "relu")
            described += f", the model's own FFN weights released ({freed / 1e6:.3f} MB)"
        described += ", one-token steps by the " + ("fused kernel on the cache's slots (numba)" if fused
                                                    else "torch gather")
    elif config.active != "all":
        described += ", FFN weights in DRAM, one-token steps by the " + ("fused gather (numba)" if fused else "torch gather")
    else:
        described += ", FFN weights in DRAM"
    return SparseDecoder(model, source, cache, described, config.token_by_token, fused)


def release_ffn_weights(model: OpenELM, keep_gate: bool) -> int:
    """Drops the model's FFN weights once a bundle serves them, so the DRAM cap bounds what FFNs hold.

    The weights become meta tensors of the same shapes, and calling either projection raises (a
    matmul of a CPU tensor with a meta weight returns uninitialised memory rather than failing);
    `keep_gate` keeps the gate rows, which the relu oracle reads to find its pattern.
    Returns the bytes freed.
    """
    freed = 0
    for layer in model.layers:
        ffn = layer.ffn
        ffn_dim = ffn.proj_2.weight.shape[1]
        fused, down = ffn.proj_1.weight, ffn.proj_2.weight
        kept = fused.detach()[:ffn_dim].clone() if keep_gate else torch.empty(fused.shape, dtype=fused.dtype,
                                                                                device="meta")
        freed += fused.numel() * fused.element_size() + down.numel() * down.element_size() - \
            (kept.numel() * kept.element_size() if keep_gate else 0)
        ffn.proj_1.weight = nn.Parameter(kept, requires_grad=False)  # [F, D] gate rows, or meta [2F, D]
        ffn.proj_2.weight = nn.Parameter(torch.empty(down.shape, dtype=down.dtype, device="meta"), requires_grad=False)
        ffn.proj_1.register_forward_pre_hook(_released)
        ffn.proj_2.register_forward_pre_hook(_released)
    return freed


def _released(module: nn.Module, inputs) -> None:
    raise RecipeError(f"{WHERE}: the model's own FFN weights were released once the bundle served them, and this "
                      "path computes the dense FFN", hint="add keep_model_ffn: true")


def fused_kernel(config: SparseDecodingConfig, model: OpenELM, cache: NeuronCache | None = None
                 ) -> FusedSparseFFN | None:
    """The fused kernel when `kernel` asks for it (an error if it cannot run) or allows it (auto):
    over the cache's slots with a bundle, else over bundles of the model's weights in DRAM."""
    if not fused_runs(config, model):
        return None
    return FusedSparseFFN.from_cache(cache, model) if cache is not None else FusedSparseFFN.from_model(model)


def fused_runs(config: SparseDecodingConfig, model: OpenELM) -> bool:
    """Whether one-token steps take the fused kernel; `kernel: fused` where it cannot run is an error."""
    if config.kernel == "torch" or config.active == "all":
        return False
    weight = model.layers[0].ffn.proj_1.weight
    if FusedSparseFFN.supports(weight, model.config.ffn_activation):
        return True
    if config.kernel == "fused":
        why = ("numba is not installed (pip install 'toolkit[sparse]')" if not fused_available() else
               f"it runs float32 relu FFNs on the CPU, and this model's are {str(weight.dtype).removeprefix('torch.')} "
               f"{model.config.ffn_activation} on {weight.device.type}")
        raise RecipeError(f"{WHERE}: kernel: fused cannot run: {why}", hint="use kernel: torch or auto")
    return False
