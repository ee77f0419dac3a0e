"""The SALSA demonstration on CPU: SFT twice, soup, then PPO (SFT reference) against SALSA (soup
reference) with equal budgets over several seeds, held-out accuracy and reward against KL.

    toolkit-train openelm/tiny.yaml          # the base: 4.9M parameters, 400 steps on Shakespeare
    OMP_NUM_THREADS=1 python -m plugins.rlhf.demo --base runs/openelm-tiny --work runs/salsa-demo

The problems come from our own one-step templates (plugins/rlhf/easy_templates: 32 templates of
addition, subtraction and multiplication of small numbers, 8 held out), so that a model of a few
million parameters trained for minutes on CPU solves some held-out ones but not all; `--templates
DIR` takes any folder in the GSM-Symbolic layout (the engine's shipped multi-step ones are beyond
such a model). The SFT and RL settings are the tiny base's (SFT_OVERRIDES, RL_OVERRIDES); `--sft`
and `--rl` override them, e.g. a smaller learning rate for an imported SmolLM2-135M base.
Trainings and evaluations run as processes of their own, `--jobs` of them side by side.

Every stage skips work already done (finished runs, written soups), so an interrupted
demonstration continues where it stopped. Writes into --work:
    data/                      the GSM-Symbolic SFT data (train / val / held-out templates)
    sft-shared                 the SFT stage both ingredients start from (--shared-sft-steps)
    sft-a, sft-b, soup         the two SFT runs (rlhf/sft_a.yaml, sft_b.yaml) and their soup
    sweep.json                 validation loss along the path sft-a -> sft-b; the demo stops with
                               one line if the soup (alpha 0.5) is worse than the worse endpoint
    ppo-s<seed>, salsa-s<seed> the RL runs (rlhf/ppo.yaml, rlhf/salsa.yaml), their policies
                               (*-policy) and their held-out evaluations (eval-*)
    *.log                      each training's and evaluation's output
    summary.json, reward_vs_kl.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable

from plugins.lm.tokenizer_files import run_tokenizer_file
from plugins.rlhf import gsm_data
from plugins.rlhf.soup import make_soup, read_ingredient
from toolkit.checkpoint import latest_checkpoint
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.errors import ToolkitError
from toolkit.files import atomic_path, atomic_write_text


EASY_TEMPLATES = Path(__file__).resolve().with_name("easy_templates")  # shipped as package data
# The demo's settings for a base of a few million parameters (`openelm/tiny.yaml`, 400 steps),
# applied before the user's --sft / --rl overrides (a pretrained 135M base wants e.g. optim.lr=2e-5).
SHARED_SFT_OVERRIDES = ("optim.lr=2e-3", "trainer.seed=0")  # the shared stage: learns the task
SFT_OVERRIDES = ("optim.lr=5e-4",)  # each ingredient: a fine-tune of the shared stage
RL_OVERRIDES = ("task.epochs=2", "task.minibatches=1", "optim.lr=3e-4")
SMOOTHING = 5  # steps in the moving average of the plotted curves
FINAL_STEPS = 10  # the last steps averaged for the final reward and KL


class SoupCheckFailed(ToolkitError):
    """The soup is worse on validation than the worse of its two ingredients."""


def check_soup(sweep: list[dict[str, float]]) -> None:
    """The middle of the path (the soup) must be no worse than the worse endpoint: one line if not."""
    ends = max(sweep[0]["val_loss"], sweep[-1]["val_loss"])
    middle = next(point for point in sweep if point["alpha"] == 0.5)
    if not middle["val_loss"] <= ends:
        raise SoupCheckFailed(f"the soup's validation loss {middle['val_loss']:.4f} is worse than the worse SFT "
                              f"run's {ends:.4f}; a reference made from it would not be a soup of good models")


def stage(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def train(recipe: str, out: Path, steps: int, overrides: list[str]) -> Path:
    """`toolkit-train recipe` to `steps` steps in `out`, resuming what an earlier call left.

    A process of its own (log: `out`.log beside the run), so that `--jobs` runs can go side by side
    with one thread each; its `error:` line is repeated here when it fails.
    """
    latest = latest_checkpoint(out)
    if latest is not None and latest.name == f"step-{steps:06d}":
        return out
    arguments = [recipe, *overrides, f"trainer.out_dir={out}", f"trainer.max_steps={steps}",
                 f"trainer.save_every={steps}", "trainer.progress=false"]
    if latest is not None:
        arguments += ["--resume", "auto"]
    stage(f"training {out.name} ({steps} steps)")
    run_logged([sys.executable, "-m", "toolkit.cli.train", *arguments], out.with_name(f"{out.name}.log"),
               f"training {out}")
    return out


def run_logged(command: list[str], log: Path, what: str) -> None:
    """Run `command` with its output in `log`; a failure is one line quoting the command's `error:` line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if finished.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        reason = next((line for line in reversed(lines) if line.startswith("error:")), f"exit {finished.returncode}")
        raise ToolkitError(f"{what} failed ({reason}; the whole output is in {log})")


def run_jobs(jobs: int, work: list[Callable[[], Any]]) -> list[Any]:
    """Each callable's result, in order, with up to `jobs` running at once; the first failure is raised."""
    if jobs <= 1:
        return [job() for job in work]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each job waits on its own subprocess
        futures = [pool.submit(job) for job in work]
        return [future.result() for future in futures]


def evaluate(policy: Path, heldout: Path, out: Path, max_new_tokens: int) -> dict[str, Any]:
    """`toolkit-eval gsm_symbolic` zero-shot on the held-out file (its instance sets); the metrics."""
    results = out / "results.json"
    if not results.is_file():
        stage(f"evaluating {policy.name} on the held-out templates")
        arguments = ["gsm_symbolic", "--model", str(policy), "--output", str(out), "--no-progress",
                     f"data_file={heldout}", "num_shots=0", f"max_new_tokens={max_new_tokens}"]
        run_logged([sys.executable, "-m", "toolkit.cli.eval", *arguments], out.with_name(f"{out.name}.log"),
                   f"evaluating {policy}")
    return json.loads(results.read_text())["metrics"]


def rl_curve(run: Path) -> list[dict[str, float]]:
    return [record for record in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "reward" in record]


def moving_average(values: list[float], window: int) -> list[float]:
    return [statistics.fmean(values[max(0, index - window + 1):index + 1]) for index in range(len(values))]


def plot(curves: dict[str, list[list[dict[str, float]]]], path: Path) -> bool:
    """Reward against KL to the SFT model, one line per run, a colour per method; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for colour, (method, runs) in zip(("tab:blue", "tab:orange"), curves.items()):
        for index, curve in enumerate(runs):
            axes.plot(moving_average([r["kl_sft"] for r in curve], SMOOTHING),
                      moving_average([r["reward"] for r in curve], SMOOTHING), color=colour, alpha=0.7,
                      label=method if index == 0 else None)
    axes.set_xlabel(f"KL to the SFT model (per sequence, {SMOOTHING}-step moving average)")
    axes.set_ylabel("reward (exact final number)")
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return True


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m plugins.rlhf.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a trained or imported LM run (its tokenizer too)")
    parser.add_argument("--work", type=Path, required=True, help="folder for everything the demo makes")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--templates", type=Path, default=EASY_TEMPLATES, help="GSM-Symbolic template folder")
    parser.add_argument("--heldout", type=int, default=8, help="templates held out of SFT and RL")
    parser.add_argument("--instances", type=int, default=150, help="SFT instances per train template")
    parser.add_argument("--heldout-instances", type=int, default=10, help="instances (sets) per held-out template")
    parser.add_argument("--shared-sft-steps", type=int, default=200, help="steps of one SFT stage both "
                        "ingredients start from (0: both start from the base); see docs/RLHF.md for why")
    parser.add_argument("--sft-steps", type=int, default=100, help="steps of each ingredient (sft-a, sft-b)")
    parser.add_argument("--sft-batch", type=int, default=16, help="rows per SFT step (larger: less data-order "
                        "noise between the two runs, so a flatter path between them)")
    parser.add_argument("--rl-steps", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--sft", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override for the SFT runs, after the demo's own ({' '.join(SFT_OVERRIDES)})")
    parser.add_argument("--shared-sft", action="append", default=[], metavar="KEY=VALUE", help="override for the "
                        f"shared SFT stage, after the demo's own ({' '.join(SHARED_SFT_OVERRIDES)})")
    parser.add_argument("--rl", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override for the RL runs, after the demo's own ({' '.join(RL_OVERRIDES)})")
    parser.add_argument("--jobs", type=int, default=2, help="trainings and evaluations run side by side, each a "
                        "process of its own (set OMP_NUM_THREADS=1 with 2 jobs on 2 cores)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    work, base = arguments.work, arguments.base
    started = time.perf_counter()
    seconds: dict[str, float] = {}  # wall time per stage of this invocation (stages done before: ~0)
    data = work / "data"
    if not (data / "split.json").is_file():
        stage("writing the SFT data")
        gsm_data.run(["--out", str(data), "--templates", str(arguments.templates), "--heldout", str(arguments.heldout),
                      "--instances", str(arguments.instances), "--heldout-instances", str(arguments.heldout_instances)])
    tokenizer = run_tokenizer_file(base) or base / "tokenizer.model"  # a SmolLM2 import keeps tokenizer.json
    sft_data = [f"data.train_file={data / 'train.jsonl'}", f"data.val_file={data / 'val.jsonl'}",
                f"data.tokenizer={tokenizer}", f"data.batch_size={arguments.sft_batch}"]
    start = base
    if arguments.shared_sft_steps > 0:
        # Two SFT runs straight from a base that has never seen the task land in different basins
        # (a loss barrier between them, and the soup check stops the demo); spawned from one shared
        # stage, as SALSA's ingredients are fine-tunes of one pretrained model, they stay connected.
        start = train("rlhf/sft_a.yaml", work / "sft-shared", arguments.shared_sft_steps,
                      [f"models.policy.source={base}", *sft_data, *SHARED_SFT_OVERRIDES, *arguments.shared_sft])
    sft_overrides = [f"models.policy.source={start}", *sft_data, *SFT_OVERRIDES, *arguments.sft]
    sft = dict(zip(("a", "b"), run_jobs(arguments.jobs, [
        partial(train, f"rlhf/sft_{name}.yaml", work / f"sft-{name}", arguments.sft_steps, sft_overrides)
        for name in ("a", "b")])))
    seconds["sft"] = time.perf_counter() - started
    soup = work / "soup"
    if not soup.exists():
        stage("making the soup")
        make_soup([str(sft["a"]), str(sft["b"])], None, soup)
    if not (work / "sweep.json").is_file():
        from plugins.rlhf.sweep import alpha_sweep

        stage("sweeping sft-a -> sft-b")
        points = alpha_sweep(read_ingredient(sft["a"]), read_ingredient(sft["b"]), [0.0, 0.25, 0.5, 0.75, 1.0])
        atomic_write_text(work / "sweep.json", json.dumps([vars(p) for p in points], indent=2) + "\n")
    sweep = json.loads((work / "sweep.json").read_text())
    check_soup(sweep)
    seconds["soup_and_sweep"] = time.perf_counter() - started - seconds["sft"]
    heldout = data / "heldout.jsonl"
    # The starting points, evaluated before any RL so that a too easy or too hard set shows early.
    starts = {"sft-a": sft["a"], "sft-b": sft["b"], "soup": soup}
    start_results = dict(zip(starts, run_jobs(arguments.jobs, [
        partial(evaluate, path, heldout, work / f"eval-{name}", arguments.max_new_tokens) for name, path in starts.items()])))
    rl_common = [f"models.policy.source={sft['a']}", f"models.sft.source={sft['a']}",
                 f"models.value.init_from={sft['a']}", f"data.tokenizer={tokenizer}",
                 f"task.max_new_tokens={arguments.max_new_tokens}", f"data.train_file={data / 'train.jsonl'}",
                 f"data.val_file={data / 'val.jsonl'}", *RL_OVERRIDES, *arguments.rl]
    methods = {"ppo": ("rlhf/ppo.yaml", []), "salsa": ("rlhf/salsa.yaml", [f"models.reference.source={soup}"])}
    curves: dict[str, list[list[dict[str, float]]]] = {method: [] for method in methods}
    accuracy: dict[str, list[float]] = {method: [] for method in methods}
    spread: dict[str, list[float]] = {method: [] for method in methods}  # std over instance sets, per run

    def rl_run(method: str, seed: int) -> tuple[list[dict[str, float]], dict[str, Any]]:
        recipe, extra = methods[method]
        out = train(recipe, work / f"{method}-s{seed}", arguments.rl_steps, [*rl_common, *extra, f"trainer.seed={seed}"])
        policy = work / f"{method}-s{seed}-policy"
        if not policy.exists():
            make_soup([str(out)], None, policy, name="policy")
        return rl_curve(out), evaluate(policy, heldout, work / f"eval-{method}-s{seed}", arguments.max_new_tokens)

    before_rl = time.perf_counter()
    runs = [(method, int(seed)) for seed in arguments.seeds.split(",") for method in methods]
    for (method, _), (curve, results) in zip(runs, run_jobs(arguments.jobs, [partial(rl_run, *run) for run in runs])):
        curves[method].append(curve)
        accuracy[method].append(results["accuracy_mean"])
        spread[method].append(results["accuracy_std"])
    seconds["rl_and_eval"] = time.perf_counter() - before_rl
    seconds["total"] = time.perf_counter() - started
    summary = {
        "sweep": sweep,
        "soup_no_worse_than_worse_endpoint": True,  # check_soup stopped the demo otherwise
        "start_heldout_accuracy": {name: {"mean": results["accuracy_mean"], "std_over_sets": results["accuracy_std"]}
                                   for name, results in start_results.items()},
        "heldout_accuracy": {method: {"per_seed": values, "std_over_sets_per_seed": spread[method], **mean_std(values)}
                             for method, values in accuracy.items()},
        f"final_{FINAL_STEPS}_steps": {
            method: {key: mean_std([statistics.fmean(r[key] for r in curve[-FINAL_STEPS:]) for curve in runs])
                     for key in ("reward", "kl_sft", "kl_ref")} for method, runs in curves.items()},
        "seconds": seconds,
        "plot": "reward_vs_kl.png" if plot(curves, work / "reward_vs_kl.png") else None,
    }
    atomic_write_text(work / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({key: summary[key] for key in ("start_heldout_accuracy", "heldout_accuracy", "seconds")}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
