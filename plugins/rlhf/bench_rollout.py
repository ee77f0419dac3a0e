"""Rollout speed: tokens/s of sampling with the KV cache against recomputing the prefix each step,
and the step-time split of the rl task's own rollouts (scoring is timed in its metrics).

    python -m plugins.rlhf.bench_rollout [--batch 8] [--prompt 96] [--new 64] [--repeats 3]

Builds the `openelm-tiny` model (random weights: speed does not depend on them), samples
`--new` tokens for a batch of `--prompt`-token prompts at temperature 1 both ways from the same
seed, checks the two produce the same tokens, and prints the best-of-repeats time of each.
"""

from __future__ import annotations

import time

import torch

from plugins.lm.sampling import generate
from plugins.openelm import OpenELM
from plugins.openelm.config import OpenELMTinyConfig
from toolkit.cli.common import ArgumentParser


def timed(model: OpenELM, prompts: torch.Tensor, new: int, use_cache: bool, repeats: int) -> tuple[float, torch.Tensor]:
    best, output = float("inf"), None
    for _ in range(repeats):
        generator = torch.Generator().manual_seed(0)
        started = time.perf_counter()
        output = generate(model, prompts, new, temperature=1.0, generator=generator, use_cache=use_cache)
        best = min(best, time.perf_counter() - started)
    return best, output


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m plugins.rlhf.bench_rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=96)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args(argv)
    torch.manual_seed(0)
    model = OpenELM(OpenELMTinyConfig()).eval()
    prompts = torch.randint(3, model.config.vocab_size, (arguments.batch, arguments.prompt))
    cached, with_cache = timed(model, prompts, arguments.new, True, arguments.repeats)
    recomputed, without_cache = timed(model, prompts, arguments.new, False, arguments.repeats)
    same = torch.equal(with_cache, without_cache)
    tokens = arguments.batch * arguments.new
    print(f"openelm-tiny, batch {arguments.batch}, prompt {arguments.prompt}, {arguments.new} new tokens, "
          f"{torch.get_num_threads()} threads")
    print(f"KV cache:  {tokens / cached:8.1f} tokens/s ({cached:.3f} s)")
    print(f"recompute: {tokens / recomputed:8.1f} tokens/s ({recomputed:.3f} s)")
    print(f"speed-up {recomputed / cached:.1f}x; same tokens both ways: {same}")


if __name__ == "__main__":
    main()
