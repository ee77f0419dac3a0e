"""Batch-1 decoding of a relufied OpenELM: dense vs sparse FFN in DRAM, bytes per token, copy bandwidth.

    python tools/bench_sparse.py --model runs/relufy-tiny --threads 1

Prints one JSON object (and writes it with --out):
- copy bandwidth: the best of a few copies of a large float32 tensor (bytes read per second; a
  copy also writes as much, so its read rate sits below what a pure read reaches), and read
  bandwidth: the best of a few sums over the same tensor (bytes read per second);
- per decoding mode, tokens/s (median of --rounds rounds of --new-tokens greedy single-token steps
  after a --prompt-tokens prefill) and weight bytes read per token: `dense` (every weight), `sparse`
  (low-rank predictors choose the neurons; DramRowProvider gathers their rows), `sparse_fused` (the
  same neurons through the fused numba kernel, fused_ffn.py, where numba is installed) and
  `oracle` (the true pattern, which itself reads the whole gate projection: a ceiling on sparsity,
  not a mode);
- the predictors are fitted here, or read from a file `relu_stats save_predictors=` wrote
  (--predictors: large models, whose fit is minutes);
- how close dense decoding is to the bandwidth bound: bytes per token / copy bandwidth;
- quality: validation loss of the dense model and of predictor-driven sparse decoding;
- an FFN micro-benchmark at a width whose weights do not fit in cache (--micro-width, 0 skips it),
  dense vs gathered rows (and the fused kernel) at a few active fractions: what sparsity buys once
  weights stream from DRAM.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from plugins.lm.loading import run_sequences
from plugins.openelm.kernels import gated_activation
from plugins.sparse.evaluator import fit_predictors
from plugins.sparse.fused_ffn import FusedPredictedPattern, FusedSparseFFN, available as fused_available, bundle_layer
from plugins.sparse.predictor import PredictedPattern, PredictorConfig, precision_recall
from plugins.sparse.predictor_file import load_predictors
from plugins.sparse.provider import DramRowProvider
from plugins.sparse.sparse_ffn import SparseOpenELM, TruePattern
from plugins.sparse.stats import record_ffn, validation_loss
from toolkit.checkpoint import load_model
from toolkit.cli.common import run_cli
from toolkit.files import atomic_write_text


def bandwidths(megabytes: int, repeats: int = 5) -> tuple[float, float]:
    """Bytes read per second over a `megabytes` float32 tensor, the best of `repeats` each: by a
    copy (which also writes as much) and by a sum (a pure read)."""
    source = torch.randn(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    best = {"copy": float("inf"), "read": float("inf")}
    for _ in range(repeats):
        for name, operation in (("copy", lambda: target.copy_(source)), ("read", source.sum)):
            start = time.perf_counter()
            operation()
            best[name] = min(best[name], time.perf_counter() - start)
    return source.numel() * 4 / best["copy"], source.numel() * 4 / best["read"]


def decode_seconds_per_token(model, prompt: torch.Tensor, new_tokens: int, after_prefill=None) -> float:
    """Seconds per greedy single-token step after a prefill of `prompt` [1, P] (then `after_prefill()`)."""
    cache = model.make_cache(1, prompt.shape[1] + new_tokens)
    token = model.forward_step(prompt, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)  # [1, 1]
    if after_prefill is not None:
        after_prefill()
    start = time.perf_counter()
    for _ in range(new_tokens):
        token = model.forward_step(token, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
    return (time.perf_counter() - start) / new_tokens


def weight_bytes(model) -> dict[str, int]:
    """Bytes of the weights a dense decoding step reads: FFN, and everything else (attention, head)."""
    ffn = sum(p.numel() * p.element_size() for layer in model.layers for p in layer.ffn.parameters())
    head = model.token_embeddings.weight if model.lm_head is None else model.lm_head.weight
    attention = sum(p.numel() * p.element_size() for layer in model.layers for p in layer.attn.parameters())
    return {"ffn": ffn, "other": attention + head.numel() * head.element_size()}


def ffn_micro(width: int, ffn_dim: int, fractions: list[float], repeats: int) -> list[dict]:
    """Median seconds of one token through a dense gated FFN vs SparseFFN's gathered rows of `fraction` of it.

    The sparse side is what SparseFFN does per layer: DramRowProvider.rows, then two matmuls.
    """
    torch.manual_seed(0)
    fused = torch.randn(2 * ffn_dim, width) * 0.02  # [2F, D]
    down = torch.randn(width, ffn_dim) * 0.02  # [D, F]
    provider = DramRowProvider([(fused, down)])
    hidden = torch.randn(1, 1, width)

    def dense():
        return torch.nn.functional.linear(gated_activation(torch.nn.functional.linear(hidden, fused), "relu"), down)

    def timed(step) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    rows = [{"active_fraction": 1.0, "seconds": timed(dense), "mode": "dense"}]
    for fraction in fractions:
        ids = torch.randperm(ffn_dim)[: int(fraction * ffn_dim)].sort().values

        def sparse(ids=ids):
            gate_up, down_rows = provider.rows(0, ids)  # [2n, D], [n, D]
            return gated_activation(torch.nn.functional.linear(hidden, gate_up), "relu") @ down_rows

        rows.append({"active_fraction": fraction, "seconds": timed(sparse), "mode": "gathered"})
        if fused_available():
            kernel = FusedSparseFFN([bundle_layer(fused, down)], shift=0.0)
            rows.append({"active_fraction": fraction, "mode": "fused",
                         "seconds": timed(lambda ids=ids: kernel(0, hidden, ids))})
    dense_seconds = rows[0]["seconds"]
    for row in rows:
        row["speedup_vs_dense"] = dense_seconds / row["seconds"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a relufied OpenELM run or checkpoint directory")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--predictor-rank", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=None,
                        help="predicted active above this sigmoid (default: the file's with --predictors, else 0.3)")
    parser.add_argument("--predictor-steps", type=int, default=300)
    parser.add_argument("--train-sequences", type=int, default=16)
    parser.add_argument("--val-sequences", type=int, default=8)
    parser.add_argument("--copy-mb", type=int, default=256)
    parser.add_argument("--micro-width", type=int, default=2048, help="model width of the FFN micro-benchmark")
    parser.add_argument("--predictors", help="read the predictors from this file instead of fitting them")
    parser.add_argument("--out", help="also write the JSON here")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    loaded = load_model(arguments.model)
    model = loaded.model.float().eval()
    train_ids, _ = run_sequences(loaded.recipe, "train", arguments.train_sequences)
    val_ids, val_labels = run_sequences(loaded.recipe, "val", arguments.val_sequences)
    if arguments.predictors:
        predictors = load_predictors(Path(arguments.predictors), model, arguments.threshold)
        arguments.predictor_rank = predictors[0].down.weight.shape[0]
    else:
        config = PredictorConfig(arguments.predictor_rank, 0.3 if arguments.threshold is None else arguments.threshold,
                                 arguments.predictor_steps)
        predictors = fit_predictors(model, train_ids, config)
    inputs, activations, logits = record_ffn(model, val_ids)
    scores = [precision_recall(p.predict(h), a != 0) for p, h, a in zip(predictors, inputs, activations)]
    sparse_model = SparseOpenELM(model, PredictedPattern(predictors), DramRowProvider.from_layers(model.layers))
    dense_loss = validation_loss(logits, val_labels)
    sparse_loss = validation_loss(sparse_model(val_ids), val_labels)

    prompt = val_ids[:1, : arguments.prompt_tokens]
    modes = {"dense": model, "sparse": sparse_model}
    if fused_available():
        modes["sparse_fused"] = SparseOpenELM(model, FusedPredictedPattern(predictors), sparse_model.sparse_ffn.provider,
                                              FusedSparseFFN.from_model(model))
    modes["oracle"] = SparseOpenELM(model, TruePattern(model))
    sizes = weight_bytes(model)
    predictor_bytes = sum(p.numel() * 4 for predictor in predictors for p in predictor.parameters())
    bytes_per_neuron = 3 * model.config.model_dim * 4
    timings = {name: [] for name in modes}
    for _ in range(arguments.rounds):  # modes interleaved so machine noise hits each alike
        for name, decoder in modes.items():
            timings[name].append(decode_seconds_per_token(decoder, prompt, arguments.new_tokens))
    copy_rate, read_rate = bandwidths(arguments.copy_mb)
    result = {"model": str(loaded.checkpoint_dir), "threads": arguments.threads,
              "copy_bandwidth_gb_s": copy_rate / 1e9, "read_bandwidth_gb_s": read_rate / 1e9, "modes": {}}
    for name, decoder in modes.items():
        seconds = statistics.median(timings[name])
        if name == "dense":
            read = sizes["ffn"] + sizes["other"]
        else:  # neurons gathered per token, counted over one more (untimed) decode
            ffn = decoder.sparse_ffn
            decode_seconds_per_token(decoder, prompt, arguments.new_tokens,
                                     after_prefill=lambda ffn=ffn: setattr(ffn, "neurons_read", 0))
            per_token = ffn.neurons_read / arguments.new_tokens
            read = sizes["other"] + per_token * bytes_per_neuron + (predictor_bytes if name != "oracle" else 0)
            if name == "oracle":
                read += sizes["ffn"] // 3  # the whole gate projection, to find the pattern
        result["modes"][name] = {"tokens_per_s": 1 / seconds, "ms_per_token": 1000 * seconds,
                                 "weight_bytes_per_token": int(read)}
    dense = result["modes"]["dense"]
    bound_seconds = dense["weight_bytes_per_token"] / (result["copy_bandwidth_gb_s"] * 1e9)
    result["dense_bandwidth_bound_tokens_per_s"] = 1 / bound_seconds
    result["dense_share_of_bandwidth_bound"] = bound_seconds / (dense["ms_per_token"] / 1000)
    read_bound_seconds = dense["weight_bytes_per_token"] / (result["read_bandwidth_gb_s"] * 1e9)
    result["dense_share_of_read_bound"] = read_bound_seconds / (dense["ms_per_token"] / 1000)
    for name in modes:
        if name != "dense":
            result[f"{name}_speedup_vs_dense"] = result["modes"][name]["tokens_per_s"] / dense["tokens_per_s"]
    # Amdahl: the most that skipping FFN neurons can give when everything else is still read
    sparse_read = result["modes"].get("sparse_fused", result["modes"]["sparse"])["weight_bytes_per_token"]
    result["bytes_ratio_dense_over_sparse"] = dense["weight_bytes_per_token"] / sparse_read
    result["ffn_share_of_dense_bytes"] = sizes["ffn"] / (sizes["ffn"] + sizes["other"])
    result["quality"] = {"dense_val_loss": dense_loss, "sparse_val_loss": sparse_loss,
                         "relative_change": (sparse_loss - dense_loss) / dense_loss}
    result["predictor"] = {"rank": arguments.predictor_rank, "threshold": predictors[0].threshold,
                           "layers": [{"precision": round(p, 4), "recall": round(r, 4)} for p, r in scores]}
    width = arguments.micro_width
    if width:
        result["ffn_micro"] = {"width": width, "ffn_dim": 4 * width,
                               "rows": ffn_micro(width, 4 * width, [0.05, 0.1, 0.25, 0.5], repeats=20)}
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.out:
        Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(arguments.out), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
