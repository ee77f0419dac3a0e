"""FFN weights served from disk ("LLM in a flash"): naive loading against bundling + windowing + a DRAM cache.

Batch-1 decoding-shaped workload: for each token, every layer asks its weight source for the rows
of that token's active FFN neurons (`rows(layer, ids)`, plugins/sparse/fetch_stats.py). Only the
weight fetch is timed; the FFN arithmetic is the same for every source and is left out. Sources:

    naive          split file (gate, up, down matrices apart), 3 reads per needed neuron, every token
    naive-bundled  the same loader on the bundled file (3 reads per neuron, but adjacent)
    ours-pread     bundled file, DRAM cache capped at --cap-fraction of the FFN weights, windowing
                   (--window tokens), runs of consecutive missing neurons in one os.preadv (runs
                   with gaps up to --coalesce-kb too), readahead off as in the decoder
    ours-mmap      the same cache reading through a read-only mmap instead (warm only: a live
                   mapping keeps the pages it touched cached, so the cold drop cannot evict them)

With --compute, each source also computes the token's FFN output over those neurons with the
fused kernel (fused_ffn.py; numba), on one fixed random input per layer, and that is timed too:
ours computes in place from the cache's slots (`resident_slots`, no gathered copy), naive from
the records it read into a reused buffer (`records`); the two outputs must agree exactly.

Warm, the sources run in lockstep, token by token, the order rotating, so load changes on a
shared machine hit them alike; cold, one after another (readahead one source leaves in flight
would slow the next). The speedup is printed as a ratio of steady-state means and as the median
of per-token ratios (pairing token t of naive with token t of ours).

Modes: warm (the file stays in the page cache, as a file smaller than free DRAM would) and cold
(the file's pages are dropped with posix_fadvise before every token, as a model larger than DRAM
would see; mincore reports how much stayed cached). Weights are random (I/O does not care); the
activation patterns are synthesized with a stated sparsity and overlap (activation_patterns.py)
unless --patterns names recorded ones, or --record-from RUN records them: a relufied run reads
its own validation text and each token's true ReLU pattern (activation != 0) is the request; then
the files hold that run's real weights (--save-patterns keeps the patterns as an .npz); with
--predictors FILE the requests are the neurons that predictor file predicts active on the same
text, what decoding with `active: predictor` asks for. A cost
model (cost_model.py) from measured positioned-read speed is printed beside each measurement.

    python tools/bench_flash_ffn.py                      # tiny OpenELM, about a minute
    python tools/bench_flash_ffn.py --active 0.05 --overlap 0.8
    python tools/bench_flash_ffn.py --record-from runs/relufy-tiny --save-patterns /tmp/relufy.npz

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from plugins.openelm.config import PRESETS
from plugins.openelm.model import OpenELM
from plugins.sparse.activation_patterns import (load_recorded, overlap_statistics, record_patterns,
                                                record_predicted_patterns, save_recorded,
                                                synthesize)
from plugins.sparse.bundle import BundleReader, write_bundle
from plugins.sparse.cost_model import drop_page_cache, estimate, make_scratch_file, measure_reads, page_residency
from plugins.sparse.fused_ffn import FusedSparseFFN, available as fused_available, gathered_ffn
from plugins.sparse.naive_loader import NaiveNeuronLoader
from plugins.sparse.neuron_cache import NeuronCache
from plugins.sparse.fetch_stats import FetchStats
from toolkit.cli.common import run_cli
from toolkit.errors import RecipeError

SOURCES = ("naive", "naive-bundled", "ours-pread", "ours-mmap")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="openelm-tiny", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--active", type=float, default=0.10, help="synthesized: fraction of neurons active per token")
    parser.add_argument("--overlap", type=float, default=0.70,
                        help="synthesized: fraction of a token's active neurons active on the previous token")
    parser.add_argument("--patterns", type=Path, default=None, help="recorded patterns (.npz, layer_{i} [T, F_i] bool)")
    parser.add_argument("--record-from", default=None,
                        help="a relufied OpenELM run: record its true ReLU patterns on its validation text, "
                             "and serve its own weights")
    parser.add_argument("--save-patterns", type=Path, default=None, help="with --record-from: write them (.npz)")
    parser.add_argument("--predictors", type=Path, default=None,
                        help="with --record-from: the neurons this predictor file predicts active are the requests "
                             "(ours as the decoder runs it: predictor + windowing + bundling)")
    parser.add_argument("--threshold", type=float, default=None, help="with --predictors: instead of the file's")
    parser.add_argument("--window", type=int, default=5, help="windowing: keep neurons of the last k tokens")
    parser.add_argument("--cap-fraction", type=float, default=0.5, help="DRAM cap as a fraction of the FFN weights")
    parser.add_argument("--read-threads", type=int, default=1, help="ours: reads in flight at once (threads)")
    parser.add_argument("--ours-readahead", action="store_true",
                        help="ours: leave the kernel's readahead on (the decoder turns it off: POSIX_FADV_RANDOM)")
    parser.add_argument("--coalesce-kb", type=float, default=0.0,
                        help="ours: one read across gaps of unneeded records up to this many KiB (0: runs only)")
    parser.add_argument("--modes", default="warm,cold")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--scratch-mb", type=int, default=512, help="cost model's scratch file (larger than what it reads)")
    parser.add_argument("--cost-reads", type=int, default=2000, help="reads per cost-model measurement")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the files go (default: a fresh temp dir)")
    parser.add_argument("--compute", action="store_true",
                        help="time fetch + the fused FFN kernel over the fetched neurons (needs numba), not the fetch alone")
    parser.add_argument("--check-tokens", type=int, default=3, help="tokens whose rows are compared with the dense weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = set(args.sources.split(",")) - set(SOURCES) or set(args.modes.split(",")) - {"warm", "cold"}
    if unknown:
        raise RecipeError(f"unknown source or mode {sorted(unknown)} (sources {', '.join(SOURCES)}; modes warm, cold)")
    if args.record_from and args.patterns:
        raise RecipeError("--record-from and --patterns are two sources of patterns: give one")
    if (args.save_patterns or args.predictors) and not args.record_from:
        raise RecipeError("--save-patterns and --predictors need --record-from")
    if args.threshold is not None and (not args.predictors or not 0 < args.threshold < 1):
        raise RecipeError(f"--threshold goes with --predictors and lies in (0, 1), got {args.threshold}")
    if args.compute and (args.dtype != "float32" or not fused_available()):
        raise RecipeError("--compute runs the fused kernel: it needs numba (pip install 'toolkit[sparse]') and --dtype float32")
    if args.tokens <= args.window:
        raise RecipeError(f"--tokens {args.tokens} must exceed --window {args.window} (the steady state starts after it)")
    return args


def dense_rows(model: OpenELM, layer: int, ids: torch.Tensor, dtype: torch.dtype):
    gate_up, down = model.layers[layer].ffn.proj_1.weight.detach(), model.layers[layer].ffn.proj_2.weight.detach()
    return gate_up[torch.cat([ids, ids + down.shape[1]])].to(dtype), down[:, ids].t().to(dtype)


def difference(after: FetchStats, before: FetchStats) -> FetchStats:
    return FetchStats(**{field.name: getattr(after, field.name) - getattr(before, field.name)
                         for field in dataclasses.fields(FetchStats)})


def kernel_inputs(model: OpenELM, seed: int) -> list[torch.Tensor]:
    """One fixed random FFN input [1, 1, D] per layer, for --compute."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, layer.ffn.proj_2.weight.shape[0], generator=generator) for layer in model.layers]


def compute_step(provider, model: OpenELM, hiddens: list[torch.Tensor]):
    """(layer, ids) -> the FFN output [1, 1, D] over those neurons by the fused kernel, fetching them first:
    in place from a NeuronCache's slots, or from the records a NaiveNeuronLoader read."""
    shift = model.layers[0].ffn.shift
    if isinstance(provider, NeuronCache):
        kernel = FusedSparseFFN.from_cache(provider, model)
        return lambda layer, ids: kernel(layer, hiddens[layer], provider.resident_slots(layer, ids))
    outputs = [np.empty(hidden.shape[-1], dtype=np.float32) for hidden in hiddens]

    def naive_step(layer, ids):
        records = provider.records(layer, ids)  # [n, 3D]
        gathered_ffn(records, np.arange(len(records)), hiddens[layer].view(-1).numpy(), np.float32(shift), outputs[layer])
        return torch.from_numpy(outputs[layer].copy()).view(1, 1, -1)  # [1, 1, D], as the cache kernel gives
    return naive_step


def run_lockstep(sources: dict, patterns, cold: bool, warmup: int, check) -> dict[str, dict]:
    """Every source fetches token t before any fetches token t + 1 (who goes first rotates), so a
    change in the machine's load hits all of them alike. `sources`: name -> (provider, file, step),
    step(layer, ids) what is timed. Per source: per-token seconds, and stats over all tokens and after `warmup`."""
    names = list(sources)
    seconds = {name: [] for name in names}
    residency = {name: [] for name in names}
    steady_start = {}
    for token, layers in enumerate(patterns):
        shift = token % len(names)
        for name in names[shift:] + names[:shift]:
            provider, path, step = sources[name]
            if token == warmup:
                steady_start[name] = dataclasses.replace(provider.stats)
            if cold:
                drop_page_cache(path)
                residency[name].append(page_residency(path))
            outputs = []
            start = time.perf_counter()
            for layer, ids in enumerate(layers):
                outputs.append(step(layer, ids))
            seconds[name].append(time.perf_counter() - start)
            check(token, name, outputs)
    results = {}
    for name in names:
        provider, steady_seconds = sources[name][0], seconds[name][warmup:]
        cached = residency[name]
        results[name] = {"all": provider.stats.summary(), "steady": difference(provider.stats, steady_start[name]).summary(),
                         "ms_per_token_all": 1e3 * statistics.fmean(seconds[name]),
                         "ms_per_token_steady": 1e3 * statistics.fmean(steady_seconds),
                         "ms_per_token_steady_median": 1e3 * statistics.median(steady_seconds),
                         "steady_seconds": steady_seconds,
                         "cached_fraction_at_token_start": statistics.fmean(cached) if cached and None not in cached else None}
    return results


def cost_measurements(scratch: Path, read_sizes: dict[str, int], reads: int, seed: int) -> dict:
    """Random positioned reads of each distinct mean read size (cold and warm), sequential 1 MiB reads."""
    measured = {}
    for size in sorted(set(read_sizes.values())):
        for cold in (True, False):
            measured[(size, cold)] = measure_reads(scratch, size, reads, "random", cold, seed)
    for cold in (True, False):
        measured[("sequential-1MiB", cold)] = measure_reads(scratch, 1 << 20, min(reads, 256), "sequential", cold, seed)
    return measured


def recorded_run(run: str, tokens: int, predictors: Path | None, threshold: float | None) -> tuple[OpenELM, list, str]:
    """The run's model and its patterns on the first `tokens` tokens of its validation text: the
    true ReLU patterns, or with `predictors` (a predictor file) the neurons they predict active."""
    from plugins.lm.loading import run_sequences
    from plugins.sparse.predictor_file import load_predictors
    from toolkit.checkpoint import load_model

    loaded = load_model(run)
    if not isinstance(loaded.model, OpenELM):
        raise RecipeError(f"--record-from {run}: holds a {type(loaded.model).__name__}, not an OpenELM")
    sequence_length = int(loaded.recipe["data"]["seq_len"])
    input_ids, _ = run_sequences(loaded.recipe, "val", -(-tokens // sequence_length))  # [N, S]
    if predictors is None:
        patterns = record_patterns(loaded.model.eval(), input_ids)[:tokens]
        return loaded.model, patterns, f"recorded from {run} (true ReLU pattern on {len(patterns)} validation tokens)"
    chosen = load_predictors(predictors, loaded.model, threshold)
    patterns = record_predicted_patterns(loaded.model.eval(), input_ids, chosen)[:tokens]
    return loaded.model, patterns, (f"recorded from {run} (neurons {predictors} predicts active at threshold "
                                    f"{chosen[0].threshold:g}, on {len(patterns)} validation tokens)")


def main(argv: list[str]) -> int:
    args = parse_arguments(argv)
    load_at_start = os.getloadavg()[0]  # the machine is shared: other jobs slow every figure
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    if args.record_from:
        model, patterns, pattern_source = recorded_run(args.record_from, args.tokens, args.predictors, args.threshold)
        config, model_name = model.config, args.record_from
    else:
        config, model_name = PRESETS[args.preset](), args.preset
        torch.manual_seed(args.seed)
        with torch.device("meta"):
            model = OpenELM(config)
        model = model.to_empty(device="cpu")
        model.init_weights()
    shapes = [(config.model_dim, layer.ffn.proj_2.weight.shape[1]) for layer in model.layers]
    ffn_dims = [ffn_dim for _, ffn_dim in shapes]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-flash-ffn-"))
    work.mkdir(parents=True, exist_ok=True)
    files = {"split": work / "ffn_split.bin", "bundled": work / "ffn_bundled.bin"}
    header = write_bundle(model, files["bundled"], dtype=dtype)
    write_bundle(model, files["split"], layout="split", dtype=dtype)
    ffn_bytes = sum(layer["nbytes"] for layer in header["layers"])
    cap = int(args.cap_fraction * ffn_bytes)
    if args.save_patterns:
        save_recorded(args.save_patterns, patterns, ffn_dims)
    if args.patterns:
        patterns, pattern_source = load_recorded(args.patterns, ffn_dims)[:args.tokens], f"recorded ({args.patterns})"
    elif not args.record_from:
        patterns = synthesize(ffn_dims, args.tokens, args.active, args.overlap, args.seed)
        pattern_source = f"synthesized: {args.active:.0%} active, {args.overlap:.0%} overlap with the previous token"
    pattern_stats = overlap_statistics(patterns, ffn_dims, args.window)
    print(f"load average {load_at_start:.2f}; model {model_name} ({len(shapes)} layers, D {config.model_dim}, F {ffn_dims}), {args.dtype}; "
          f"FFN weights {ffn_bytes / 1e6:.2f} MB; DRAM cap {cap / 1e6:.2f} MB; window {args.window}; "
          f"{len(patterns)} tokens, patterns {pattern_source}; measured {json.dumps(pattern_stats)}")

    checked = {"tokens": 0}
    compute_inputs = kernel_inputs(model, args.seed)
    computed = {}  # with --compute: (mode, token) -> the first source's outputs, which the others must equal

    def check(token, name, outputs):
        if args.compute:
            first = computed.setdefault((mode, token), outputs)
            assert all(torch.equal(a, b) for a, b in zip(first, outputs)), (name, token)
            if token < args.check_tokens and first is outputs:
                shift = model.layers[0].ffn.shift
                for layer, output in enumerate(outputs):
                    gate_up, down = dense_rows(model, layer, patterns[token][layer], torch.float32)
                    hidden = compute_inputs[layer].view(-1)
                    gate, up = (gate_up @ hidden).chunk(2)
                    torch.testing.assert_close(output.view(-1), (torch.relu(gate - shift) * up) @ down,
                                               rtol=1e-4, atol=1e-4)
                checked["tokens"] += 1
        elif token < args.check_tokens:
            for layer, (gate_up, down) in enumerate(outputs):
                expected_gate_up, expected_down = dense_rows(model, layer, patterns[token][layer], dtype)
                assert torch.equal(gate_up, expected_gate_up) and torch.equal(down, expected_down), (token, layer)
            checked["tokens"] += 1

    results = {}
    for mode in args.modes.split(","):
        # A live mapping pins the pages it touched, so the cold drop could not evict the bundled
        # file's pages for the other sources: mmap is measured warm only.
        names = [name for name in args.sources.split(",") if not (mode == "cold" and name == "ours-mmap")]
        sources = {}
        for name in names:
            path = files["split" if name == "naive" else "bundled"]
            # Naive keeps the OS's readahead, as a plain loader would; ours reads as the decoder does.
            readahead = name.startswith("naive") or args.ours_readahead
            reader = BundleReader(path, shapes, method="mmap" if name == "ours-mmap" else "pread", readahead=readahead)
            if name.startswith("naive"):
                provider = NaiveNeuronLoader(reader)
            else:
                provider = NeuronCache(reader, cap, args.window, args.read_threads, int(args.coalesce_kb * 1024))
                assert provider.allocated_bytes() <= cap
            step = compute_step(provider, model, compute_inputs) if args.compute else provider.rows
            sources[name] = (provider, path, step)
        if mode == "warm":
            measured_mode = run_lockstep(sources, patterns, False, args.window, check)
        else:  # one source after another: the readahead a source leaves in flight would slow the next
            measured_mode = {}
            for name, source in sources.items():
                measured_mode.update(run_lockstep({name: source}, patterns, True, args.window, check))
        for name, (provider, _, _) in sources.items():
            result = measured_mode[name]
            if isinstance(provider, NeuronCache):
                result["cache_allocated_bytes"] = provider.allocated_bytes()
                provider.close()
            provider.reader.close()
            results[(mode, name)] = result
            steady = result["steady"]
            print(f"{mode:4} {name:13} fetch {result['ms_per_token_steady']:8.3f} ms/token "
                  f"({1e3 / result['ms_per_token_steady']:8.1f} tok/s; all tokens {result['ms_per_token_all']:.3f} ms) "
                  f"read {steady['bytes_read_per_token'] / 1e3:8.1f} kB/token in {steady['reads_per_token']:7.1f} reads "
                  f"(mean {steady['mean_read_bytes']:6.0f} B), hit rate {steady['hit_rate']:.2f}"
                  + (f", cached at token start {result['cached_fraction_at_token_start']:.3f}" if mode == "cold" else ""))

    scratch = make_scratch_file(work / "scratch.bin", args.scratch_mb << 20)
    read_sizes = {}
    for (mode, source), result in results.items():
        read_sizes.setdefault(source, max(1, round(result["steady"]["mean_read_bytes"])))
    measured = cost_measurements(scratch, read_sizes, args.cost_reads, args.seed)
    print(f"read speed on {scratch} ({args.scratch_mb} MiB, {args.cost_reads} reads each; "
          "cold = posix_fadvise DONTNEED first, cached = mincore):")
    for measurement in measured.values():
        print(f"  {measurement.pattern:10} {measurement.read_bytes:8d} B {'cold' if measurement.cold else 'warm'}: "
              f"{measurement.seconds_per_read * 1e6:8.1f} us/read, {measurement.bytes_per_second / 1e6:8.1f} MB/s "
              f"(cached before {measurement.resident_before:.3f}, after {measurement.resident_after:.3f})")
    summary = {}
    for (mode, source), result in results.items():
        model_cost = estimate(result["steady"], measured[(read_sizes[source], mode == "cold")])
        result["cost_model_ms_per_token"] = 1e3 * model_cost.seconds_per_token
        print(f"cost model {mode:4} {source:13}: {model_cost.reads_per_token:7.1f} reads x "
              f"{model_cost.seconds_per_read * 1e6:6.1f} us = {1e3 * model_cost.seconds_per_token:8.3f} ms/token "
              f"({model_cost.tokens_per_second:8.1f} tok/s expected; measured {result['ms_per_token_steady']:.3f} ms)")
    for mode in args.modes.split(","):
        naive = results.get((mode, "naive"))
        for source in ("ours-pread", "ours-mmap"):
            if naive and (mode, source) in results:
                ours = results[(mode, source)]
                ratio = naive["ms_per_token_steady"] / ours["ms_per_token_steady"]
                paired = statistics.median(a / b for a, b in zip(naive["steady_seconds"], ours["steady_seconds"]))
                summary[f"{mode}_{source}_speedup_over_naive"] = ratio
                summary[f"{mode}_{source}_paired_median_speedup"] = paired
                print(f"{mode}: {source} is {ratio:.2f}x naive (steady-state means; median of per-token "
                      f"ratios {paired:.2f}x; target >= 4x)")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "load_average_start_end": [load_at_start, os.getloadavg()[0]],
                      "arguments": {key: str(value) for key, value in vars(args).items()},
                      "ffn_bytes": ffn_bytes, "cap_bytes": cap, "patterns": pattern_stats, "rows_checked_tokens": checked["tokens"],
                      "results": {f"{mode}/{source}": result for (mode, source), result in results.items()},
                      "read_measurements": {f"{name}/{'cold' if cold else 'warm'}": dataclasses.asdict(measurement)
                                            for (name, cold), measurement in measured.items()},
                      **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
