"""Duo-LLM speed on the tiny Duo OpenELM (6 layers, width 256, small FFNs 16x narrower), three parts:

(ffn)      the routed FFN step of every block at a budget of 25% big uses (the other tokens go to
           the small FFN, or skip) against all tokens through the big FFN: tokens/s ratio.
(overhead) a whole forward of the Duo model routed all-big (fixed and random router) against the
           plain OpenELM forward on the same weights: extra time in percent.
(oracle)   the exhaustive oracle (plugins.duo.oracle): all 3^6 = 729 patterns on `--oracle-sequences`
           sequences of `--seq` tokens, wall time.

    python tools/bench_duo.py                    # all three
    python tools/bench_duo.py --parts ffn overhead

Inference mode (no gradients), float32, CPU. Timings are medians over `--repeats` runs with the
compared sides alternating, after a warmup each. The last line printed is a JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from plugins.duo.model import DuoOpenELM, DuoTinyConfig
from plugins.duo.routed_ffn import routed_ffn
from plugins.duo.routers import BIG, SKIP, SMALL, FixedRouter, RandomRouter, RandomRouterConfig, Route
from plugins.openelm.config import OpenELMTinyConfig
from plugins.openelm.model import OpenELM


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["ffn", "overhead", "oracle"], choices=["ffn", "overhead", "oracle"])
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch (ffn, overhead)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--oracle-sequences", type=int, default=64)
    parser.add_argument("--oracle-chunk", type=int, default=2, help="sequences scored together by the oracle")
    parser.add_argument("--oracle-precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    return parser.parse_args()


def median_times(functions: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions alternating run by run (after one warmup)."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def budget_choices(shape: tuple[int, int], big: float, small: float, seed: int) -> torch.Tensor:
    """Choices [B, S] with exactly round(big * N) big and round(small * N) small tokens, shuffled."""
    total = shape[0] * shape[1]
    big_count, small_count = round(big * total), round(small * total)
    codes = torch.full((total,), SKIP, dtype=torch.long)
    codes[:big_count] = BIG
    codes[big_count:big_count + small_count] = SMALL
    return codes[torch.randperm(total, generator=torch.Generator().manual_seed(seed))].view(shape)


def bench_ffn(model: DuoOpenELM, batch: int, seq: int, repeats: int) -> dict:
    normed = torch.randn(batch, seq, model.config.model_dim)  # [B, S, D]
    layers = list(model.layers)
    routes = {
        "all_big": [Route(torch.full((batch, seq), BIG)) for _ in layers],
        "big25_small75": [Route(budget_choices((batch, seq), 0.25, 0.75, index)) for index, _ in enumerate(layers)],
        "big25_small50_skip25": [Route(budget_choices((batch, seq), 0.25, 0.5, index)) for index, _ in enumerate(layers)],
        "big25_skip75": [Route(budget_choices((batch, seq), 0.25, 0.0, index)) for index, _ in enumerate(layers)],
    }

    def run(name: str):
        def step():
            for layer, route in zip(layers, routes[name]):
                routed_ffn(layer.ffn, layer.small_ffn, normed, route, inference=True)
        return step

    with torch.inference_mode():
        times = median_times({name: run(name) for name in routes}, repeats)
    tokens = batch * seq
    result = {f"{name}_tokens_per_s": tokens / seconds for name, seconds in times.items()}
    for name in routes:
        if name != "all_big":
            result[f"{name}_speedup"] = times["all_big"] / times[name]
    return result


def bench_overhead(model: DuoOpenELM, batch: int, seq: int, repeats: int) -> dict:
    plain = OpenELM(OpenELMTinyConfig(max_context_length=seq)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    fixed = FixedRouter(["big"] * model.config.num_layers)
    random_all_big = RandomRouter(RandomRouterConfig(big=[1.0], small=[0.0], skip=[0.0]))
    token_ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))

    def duo_with(router):
        def step():
            model.set_router(router)
            model(token_ids)
        return step

    hidden = torch.zeros(batch, seq, model.config.model_dim)

    def decisions_of(router):
        # What routing adds to a forward: each layer's decision and the per-FFN token count.
        def step():
            for layer in range(model.config.num_layers):
                (router.route(layer, hidden).choices.reshape(-1) == BIG).nonzero()
        return step

    with torch.inference_mode():
        times = median_times({"plain": lambda: plain(token_ids), "duo_fixed_all_big": duo_with(fixed),
                              "duo_random_all_big": duo_with(random_all_big)}, repeats)
        decisions = median_times({"fixed": decisions_of(fixed), "random": decisions_of(random_all_big)}, repeats)
    return {"plain_forward_s": times["plain"],
            "fixed_decisions_percent_of_plain": 100 * decisions["fixed"] / times["plain"],
            "random_decisions_percent_of_plain": 100 * decisions["random"] / times["plain"],
            "fixed_all_big_overhead_percent": 100 * (times["duo_fixed_all_big"] / times["plain"] - 1),
            "random_all_big_overhead_percent": 100 * (times["duo_random_all_big"] / times["plain"] - 1)}


def bench_oracle(model: DuoOpenELM, sequences: int, seq: int, chunk: int, precision: str) -> dict:
    from plugins.duo.oracle import OracleSearchConfig, search

    token_ids = torch.randint(0, model.config.vocab_size, (sequences, seq + 1), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    result = search(model, token_ids[:, :-1], token_ids[:, 1:], OracleSearchConfig(chunk_sequences=chunk, precision=precision))
    seconds = time.perf_counter() - start
    return {"oracle_patterns": result.num_patterns, "oracle_sequences": sequences, "oracle_seq": seq,
            "oracle_precision": precision, "oracle_seconds": seconds, "oracle_seconds_per_sequence": seconds / sequences}


def main() -> None:
    arguments = parse_arguments()
    if arguments.threads > 0:
        torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    model = DuoOpenELM(DuoTinyConfig(max_context_length=arguments.seq, router="fixed",
                                     router_options={"pattern": ["big"] * 6})).eval()
    figures: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "batch": arguments.batch, "seq": arguments.seq,
                     "small_ffn_dims": [layer.small_widths.ffn_dim for layer in model.layers],
                     "big_ffn_dims": [layer.widths.ffn_dim for layer in model.layers]}
    if "ffn" in arguments.parts:
        figures.update(bench_ffn(model, arguments.batch, arguments.seq, arguments.repeats))
        print({key: round(value, 3) for key, value in figures.items() if "speedup" in key})
    if "overhead" in arguments.parts:
        figures.update(bench_overhead(model, arguments.batch, arguments.seq, arguments.repeats))
        print({key: round(value, 2) for key, value in figures.items() if "overhead" in key or "decisions" in key})
    if "oracle" in arguments.parts:
        figures.update(bench_oracle(model, arguments.oracle_sequences, arguments.seq, arguments.oracle_chunk,
                                    arguments.oracle_precision))
        print(f"oracle: {figures['oracle_patterns']} patterns x {arguments.oracle_sequences} sequences in "
              f"{figures['oracle_seconds']:.1f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
