"""LM training throughput: the toolkit's OpenELM against transformers' LlamaForCausalLM, same shape.

Both models are built with uniform layer widths and the same shape (layers, width, heads, KV heads,
FFN width, vocabulary, tied embeddings), trained on the same random batch in the same process, with
timing interleaved step by step (the order alternates each round) so machine noise hits both alike;
warmup steps (and compilation, with --compile) are excluded. tokens/s come from the median step
time and the ratio is the median of the paired ratios, so bursts of load from other processes
on a shared machine do not decide the result (means are printed too). A training step is: forward, float32
cross-entropy over all positions (the lm plugin's loss, the same code for both), backward, fused AdamW step,
zero grads.
OpenELM's Q/K norm is off by default so that both compute exactly the same function (--qk-norm
turns it on).

A third runner, "engine", is the same OpenELM step through the toolkit's Trainer (a recipe built
by `toolkit.assembly` from openelm/tiny.yaml with this shape, z-loss, clipping and schedule off so
that it computes what the bare loop does, fed the same batch): its time against the bare loop's is
the engine's overhead. Data loading is not part of it (both are handed the batch).

MFU = FLOPs per token (6 N + 12 L H E T, PaLM appendix B) x tokens/s / peak. The peak is the
trainer's own definition (toolkit.engine.metrics.MatmulPeak: a square matmul in the run's
precision), sampled between the timed steps of this run, so it sees the same machine load as the
steps do; MFU is the median over rounds of (a step's FLOPs / its time / the peak sampled right
after it). "engine_bar_mfu" is what the trainer's progress bar shows for the same steps (against
the peak it measured once at start).
The last line printed is JSON: toolkit_tok_s, hf_tok_s, ratio, mfu (toolkit's), hf_mfu,
engine_overhead, engine_bar_mfu, precision.

By default the script re-executes itself with glibc malloc tuned (one arena, no mmap/trim for big
blocks): without it every step page-faults fresh memory for the [B*S, V] logits and gradients,
which costs both models the same ~10-20% and only adds noise. --no-malloc-tune keeps glibc defaults.

    python tools/bench_lm.py --precision bf16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

MALLOC_TUNING = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model (paired rounds)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--ffn-dim", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--hf-attention", choices=["sdpa", "eager"], default="sdpa",
                        help="transformers' attention implementation (sdpa: its default)")
    parser.add_argument("--qk-norm", action="store_true", help="OpenELM's Q/K RMSNorm on (Llama has none)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-malloc-tune", action="store_true")
    return parser.parse_args(argv)


def build_models(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from plugins.openelm.config import OpenELMConfig
    from plugins.openelm.model import OpenELM

    torch.manual_seed(args.seed)
    toolkit_model = OpenELM(
        OpenELMConfig(
            vocab_size=args.vocab, max_context_length=args.seq_len, num_layers=args.layers,
            model_dim=args.dim, head_dim=args.dim // args.heads, num_gqa_groups=args.heads // args.kv_heads,
            num_query_heads=args.heads, num_kv_heads=args.kv_heads, ffn_dim=args.ffn_dim,
            normalize_qk=args.qk_norm, tie_embeddings=True,
        )
    )
    hf_model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=args.vocab, hidden_size=args.dim, intermediate_size=args.ffn_dim,
            num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
            head_dim=args.dim // args.heads, max_position_embeddings=args.seq_len, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
            attn_implementation=args.hf_attention,
        )
    )
    return toolkit_model, hf_model


def build_engine(args, scratch: str):
    """The Trainer for the same shape, from openelm/tiny.yaml: what `toolkit-train` would run."""
    from toolkit.assembly import build_trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    overrides = [
        "model.name=openelm", f"model.vocab_size={args.vocab}", f"model.max_context_length={args.seq_len}",
        f"model.num_layers={args.layers}", f"model.model_dim={args.dim}", f"model.head_dim={args.dim // args.heads}",
        f"model.num_gqa_groups={args.heads // args.kv_heads}", f"model.num_query_heads={args.heads}",
        f"model.num_kv_heads={args.kv_heads}", f"model.ffn_dim={args.ffn_dim}",
        f"model.normalize_qk={str(args.qk_norm).lower()}", "loss.z_loss=0.0", "schedule=null",
        "optim.lr=1e-3", "optim.betas=[0.9,0.95]", "optim.weight_decay=0.1", "trainer.clip_grad=0",
        f"trainer.precision={args.precision}", f"trainer.compile={str(args.compile).lower()}",
        f"trainer.seed={args.seed}", f"trainer.out_dir={scratch}", "trainer.progress=false",
        f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch_size}", f"data.vocab_size={args.vocab}",
    ]
    return build_trainer(load_recipe("openelm/tiny.yaml", overrides, get_registries()))


def make_step(model, logits_of, optimizer, batch, targets, precision: str):
    """One training step as a closure: forward, float32 cross-entropy, backward, AdamW, zero grads."""
    import torch

    from plugins.lm.loss import CrossEntropyLoss

    # The lm plugin's loss (fp32 logsumexp, no z-loss), the one the engine's task runs too, so the
    # engine's overhead is the engine's alone.
    loss_function = CrossEntropyLoss()

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = logits_of(model, batch)  # [B, S, V]
        loss = loss_function(logits, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.no_malloc_tune and any(os.environ.get(k) != v for k, v in MALLOC_TUNING.items()):
        # glibc reads these only at start-up, hence the re-exec.
        os.environ.update(MALLOC_TUNING)
        os.execv(sys.executable, [sys.executable, *sys.argv])

    import tempfile

    import torch

    from toolkit.engine.metrics import MatmulPeak

    if args.threads:
        torch.set_num_threads(args.threads)
    toolkit_model, hf_model = build_models(args)
    seq_flops = toolkit_model.flops_per_token(args.seq_len)
    parameters = toolkit_model.num_parameters()
    hf_parameters = sum(p.numel() for p in hf_model.parameters())
    if not args.qk_norm:  # the same shape, parameter for parameter
        assert parameters == hf_parameters, (parameters, hf_parameters)

    generator = torch.Generator().manual_seed(args.seed)
    batch = torch.randint(0, args.vocab, (args.batch_size, args.seq_len), generator=generator)
    targets = torch.randint(0, args.vocab, (args.batch_size, args.seq_len), generator=generator)

    runners = {}
    for label, model, logits_of in (
        ("toolkit", toolkit_model, lambda m, x: m(x)),
        ("hf", hf_model, lambda m, x: m(input_ids=x, use_cache=False).logits),
    ):
        model.train()
        compiled = torch.compile(model) if args.compile else model
        # The fused (single-kernel) AdamW: on CPU about 3x faster than the for-each default.
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        runners[label] = make_step(compiled, logits_of, optimizer, batch, targets, args.precision)
    scratch = tempfile.TemporaryDirectory()
    engine = build_engine(args, scratch.name)
    engine_batch = {"input_ids": batch, "labels": targets}
    engine_summaries: list[dict] = []


    def engine_step() -> float:
        engine_summaries.append(engine.run_step(iter([engine_batch])))
        return engine_summaries[-1]["loss"]

    runners["engine"] = engine_step

    print(
        f"shape: {args.layers} layers, width {args.dim}, {args.heads} heads ({args.kv_heads} KV), FFN {args.ffn_dim}, "
        f"vocab {args.vocab}, seq {args.seq_len}, batch {args.batch_size}; {parameters / 1e6:.2f}M parameters; "
        f"precision {args.precision}; compile {args.compile}; hf attention {args.hf_attention}; threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}",
        flush=True,
    )
    for label, step in runners.items():
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        print(f"warmup {label}: {time.perf_counter() - start:.1f}s", flush=True)

    # The trainer's matmul peak, sampled between the training steps so that it sees the same
    # machine as they do.
    probe = MatmulPeak(torch.device("cpu"), args.precision)
    peak_samples = []
    # One step of each model per round, the order alternating: a burst of load from elsewhere on
    # the machine hits both sides of a pair alike. Medians then ignore the disturbed pairs.
    times: dict[str, list[float]] = {label: [] for label in runners}
    pair_ratios, engine_ratios = [], []
    for round_index in range(args.steps):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for label in order:
            start = time.perf_counter()
            step_loss = runners[label]()
            times[label].append(time.perf_counter() - start)
        pair_ratios.append(times["hf"][-1] / times["toolkit"][-1])
        engine_ratios.append(times["engine"][-1] / times["toolkit"][-1])
        peak_samples.append(probe.sample())
        if (round_index + 1) % max(1, args.steps // 5) == 0:
            print(
                f"step {round_index + 1}/{args.steps}: toolkit {times['toolkit'][-1]:.3f} s, "
                f"hf {times['hf'][-1]:.3f} s, ratio {pair_ratios[-1]:.3f} (loss {step_loss:.3f})",
                flush=True,
            )
    peak = statistics.median(peak_samples)
    peak_shape = f"[{probe.size}x{probe.size}] @ [{probe.size}x{probe.size}]"
    # What the trainer's progress bar showed for the timed steps: its FLOPs over the step time,
    # against the peak it measured once when it started.
    engine_peak = engine.peak_flops

    tokens_per_step = args.batch_size * args.seq_len
    rates = {label: tokens_per_step / statistics.median(times[label]) for label in runners}
    means = {label: tokens_per_step * len(times[label]) / sum(times[label]) for label in runners}
    # MFU per round (that round's step against the peak sampled right after it), then the median.
    step_flops = seq_flops * tokens_per_step
    mfu = {
        label: statistics.median(step_flops / (t * p) for t, p in zip(times[label], peak_samples))
        for label in runners
    }
    ratio = statistics.median(pair_ratios)
    engine_overhead = statistics.median(engine_ratios) - 1.0
    timed_summaries = engine_summaries[args.warmup:]
    bar_mfu = statistics.median(summary["flops"] / t / engine_peak
                                for summary, t in zip(timed_summaries, times["engine"]))
    print(f"matmul peak ({args.precision}, {peak_shape}, median of {len(peak_samples)} samples between steps; "
          f"max {max(peak_samples) / 1e9:.1f}): {peak / 1e9:.1f} GFLOP/s")
    print(f"FLOPs per token: {seq_flops / 1e6:.2f}M (6N + 12LHET)")
    for label in runners:
        print(f"{label:8s}: {rates[label]:8.0f} tokens/s (median step; mean {means[label]:.0f})  "
              f"MFU {100 * mfu[label]:5.1f}%")
    print(f"ratio toolkit/hf: {ratio:.3f} (median of {len(pair_ratios)} paired steps; "
          f"quartiles {statistics.quantiles(pair_ratios, n=4)[0]:.3f} .. {statistics.quantiles(pair_ratios, n=4)[2]:.3f}; "
          f"ratio of means {means['toolkit'] / means['hf']:.3f})")
    print(f"engine overhead: {100 * engine_overhead:+.1f}% (median of paired engine/bare steps); "
          f"engine progress-bar MFU {100 * bar_mfu:.1f}% against its start-up peak {engine_peak / 1e9:.1f} GFLOP/s")
    engine.close()
    scratch.cleanup()
    print(json.dumps({
        "toolkit_tok_s": round(rates["toolkit"], 1),
        "hf_tok_s": round(rates["hf"], 1),
        "ratio": round(ratio, 3),
        "mfu": round(mfu["toolkit"], 4),
        "hf_mfu": round(mfu["hf"], 4),
        "engine_overhead": round(engine_overhead, 4),
        "engine_mfu": round(mfu["engine"], 4),
        "engine_bar_mfu": round(bar_mfu, 4),
        "precision": args.precision,
        "compile": args.compile,
        "hf_attention": args.hf_attention,
        "peak_gflops": round(peak / 1e9, 1),
    }))


if __name__ == "__main__":
    main()
