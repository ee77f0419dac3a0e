"""OpenELM's layer-wise scaling against uniform widths at equal parameters, over several seeds.

OpenELM's claim: fewer heads and narrower FFNs in early layers (and more in late ones) beat the
same parameters spread evenly. This trains both arms through the real `toolkit-train` CLI:
`openelm/tiny` (layer-wise) and `openelm/tiny_uniform` (8 query heads, 2 KV heads, FFN 624 in
every layer; 4,910,720 against 4,902,528 parameters), same data, tokens, optimizer and schedule,
one run per arm and seed. Each run validates once at its end on the whole validation split
(`trainer.eval_every=0 trainer.eval_batches=0`); `val_loss` is what training minimises (cross
entropy plus the z-loss term), `val_ce` the cross entropy alone.

The summary (`summary.json`, `summary.md` in --out, written atomically) has per run the final
validation losses and wall time, per arm mean and sample std over seeds, the difference
uniform - layerwise (positive: layer-wise wins) with a paired t-test over seeds (a seed fixes the
data order, shared by both arms) and Welch's unpaired t-test, and the difference in units of the
pooled seed std.

Resumable: a run whose final validation is in its metrics.jsonl is skipped; an interrupted one
continues from its last checkpoint (`--resume auto`). Runs of different budgets live in different
folders (`<out>/steps<N>/`), so changing --steps never mixes them.

    python tools/layerwise_ablation.py --steps 150 --warmup-steps 20 --seeds 0 1 2
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.errors import RecipeError, TrainingError
from toolkit.files import atomic_write_text

# arm name -> recipe; the first is the baseline the difference is taken against.
ARMS = {"layerwise": "openelm/tiny", "uniform": "openelm/tiny_uniform"}
METRICS = ("val_loss", "val_ce")
RESULT_FILE = "ablation_run.json"  # per run, written after its final validation was read back


@dataclass(frozen=True)
class Settings:
    out: Path
    seeds: tuple[int, ...]
    steps: int | None  # None: the recipe's own trainer.max_steps
    warmup_steps: int | None  # None: the recipe's own schedule.warmup_steps
    threads: int


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.arm}-seed{self.seed}"


def budget_folder(settings: Settings) -> Path:
    budget = f"steps{settings.steps}" if settings.steps else "recipe-steps"
    if settings.warmup_steps is not None:
        budget += f"-warmup{settings.warmup_steps}"
    return settings.out / budget


def planned_runs(settings: Settings) -> list[Run]:
    """Seed-major order, so that an unfinished ablation still has complete pairs."""
    folder = budget_folder(settings)
    return [Run(arm, seed, folder / f"{arm}-seed{seed}") for seed in settings.seeds for arm in ARMS]


def train_command(run: Run, settings: Settings) -> list[str]:
    executable = shutil.which("toolkit-train", path=str(Path(sys.executable).parent)) or shutil.which("toolkit-train")
    if executable is None:
        raise TrainingError("toolkit-train is not on PATH", hint="pip install -e . in this environment")
    overrides = [f"trainer.out_dir={run.run_dir}", f"trainer.seed={run.seed}", "trainer.eval_every=0",
                 "trainer.eval_batches=0", "trainer.progress=false", f"trainer.threads={settings.threads}"]
    if settings.steps:
        # Checkpoints along the way make an interrupted run resumable; the trainer keeps the last 2.
        overrides += [f"trainer.max_steps={settings.steps}", f"trainer.save_every={max(1, settings.steps // 4)}"]
    if settings.warmup_steps is not None:
        overrides.append(f"schedule.warmup_steps={settings.warmup_steps}")
    return [executable, ARMS[run.arm], *overrides, "--resume", "auto"]


def final_validation(run_dir: Path) -> dict | None:
    """The run's last validation record if it is at the run's last step (the run finished), else None."""
    metrics_path, recipe_path = run_dir / "metrics.jsonl", run_dir / "recipe.yaml"
    if not metrics_path.is_file() or not recipe_path.is_file():
        return None
    max_steps = None
    for line in recipe_path.read_text().splitlines():  # `  max_steps: N` under trainer:
        if line.strip().startswith("max_steps:"):
            max_steps = int(line.split(":", 1)[1])
    records = []
    for line in metrics_path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    finals = [r for r in records if "val_loss" in r and r.get("step") == max_steps]
    return finals[-1] if finals else None


def finished_result(run: Run) -> dict | None:
    path = run.run_dir / RESULT_FILE
    if path.is_file():
        return json.loads(path.read_text())
    record = final_validation(run.run_dir)  # finished, but killed before the result file was written
    if record is None:
        return None
    return {"arm": run.arm, "seed": run.seed, **{m: record[m] for m in METRICS}, "wall_s": None}


def train(run: Run, settings: Settings, log_path: Path) -> dict:
    command = train_command(run, settings)
    started = time.perf_counter()
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall_s = time.perf_counter() - started
    record = final_validation(run.run_dir)
    if finished.returncode != 0 or record is None:
        raise TrainingError(f"{run.name}: toolkit-train exited {finished.returncode} without a final validation",
                            hint=f"see {log_path}")
    result = {"arm": run.arm, "seed": run.seed, **{m: record[m] for m in METRICS}, "wall_s": round(wall_s, 1)}
    atomic_write_text(run.run_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    return result


# ---------------------------------------------------------------- statistics


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), using the symmetry for fast convergence."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # odd step
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def t_result(difference: float, standard_error: float, df: float) -> dict:
    t = difference / standard_error if standard_error > 0 else math.copysign(math.inf, difference)
    return {"t": t, "df": df, "p_two_sided": two_sided_p(t, df)}


def compare(baseline: list[float], other: list[float], paired: bool) -> dict:
    """other - baseline: the mean difference, its spread, and a t-test (paired: same index = same seed)."""
    if paired:
        differences = [o - b for b, o in zip(baseline, other)]
        n = len(differences)
        mean, std = statistics.fmean(differences), statistics.stdev(differences) if n > 1 else math.nan
        test = t_result(mean, std / math.sqrt(n), n - 1) if n > 1 else {}
        return {"n_pairs": n, "mean_difference": mean, "std_difference": std, **test}
    n_base, n_other = len(baseline), len(other)
    var_base, var_other = statistics.variance(baseline), statistics.variance(other)
    # Welch: unequal variances, Welch-Satterthwaite degrees of freedom.
    share_base, share_other = var_base / n_base, var_other / n_other
    df = (share_base + share_other) ** 2 / (share_base ** 2 / (n_base - 1) + share_other ** 2 / (n_other - 1)) \
        if share_base + share_other > 0 else float(n_base + n_other - 2)
    mean = statistics.fmean(other) - statistics.fmean(baseline)
    pooled_std = math.sqrt(((n_base - 1) * var_base + (n_other - 1) * var_other) / (n_base + n_other - 2))
    return {"mean_difference": mean, "pooled_seed_std": pooled_std,
            "difference_in_seed_stds": mean / pooled_std if pooled_std > 0 else math.copysign(math.inf, mean),
            **t_result(mean, math.sqrt(share_base + share_other), df)}


def summarise(results: list[dict]) -> dict:
    """Per metric: each arm's values by seed, mean and std; uniform - layerwise, paired and Welch."""
    baseline_arm, other_arm = list(ARMS)
    by_arm = {arm: {r["seed"]: r for r in results if r["arm"] == arm} for arm in ARMS}
    paired_seeds = sorted(set(by_arm[baseline_arm]) & set(by_arm[other_arm]))
    summary: dict = {"arms": dict(ARMS), "difference": f"{other_arm} - {baseline_arm} (positive: {baseline_arm} wins)",
                     "runs": sorted(results, key=lambda r: (r["seed"], r["arm"])), "metrics": {}}
    for metric in METRICS:
        entry: dict = {}
        for arm in ARMS:
            values = [by_arm[arm][seed][metric] for seed in sorted(by_arm[arm])]
            entry[arm] = {"n": len(values), "mean": statistics.fmean(values) if values else None,
                          "std": statistics.stdev(values) if len(values) > 1 else None}
        if len(paired_seeds) > 1:
            entry["paired"] = compare([by_arm[baseline_arm][s][metric] for s in paired_seeds],
                                      [by_arm[other_arm][s][metric] for s in paired_seeds], paired=True)
        if all(entry[arm]["n"] > 1 for arm in ARMS):
            entry["welch"] = compare([r[metric] for r in by_arm[baseline_arm].values()],
                                     [r[metric] for r in by_arm[other_arm].values()], paired=False)
        summary["metrics"][metric] = entry
    return summary


def markdown(summary: dict, command: str) -> str:
    baseline_arm, other_arm = list(ARMS)
    lines = ["# Layer-wise scaling ablation", "", f"`{command}`", "",
             "| run | val_loss | val_ce | wall (s) |", "|---|---|---|---|"]
    for r in summary["runs"]:
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        lines.append(f"| {r['arm']} seed {r['seed']} | {r['val_loss']:.4f} | {r['val_ce']:.4f} | {wall} |")
    for metric, entry in summary["metrics"].items():
        lines += ["", f"**{metric}**, difference {summary['difference']}", ""]
        for arm in ARMS:
            stats = entry[arm]
            spread = "" if stats["std"] is None else f" ± {stats['std']:.4f} (std)"
            mean = "-" if stats["mean"] is None else f"{stats['mean']:.4f}"
            lines.append(f"- {arm}: {mean}{spread} over {stats['n']} seeds")
        if "paired" in entry:
            p = entry["paired"]
            lines.append(f"- paired by seed: difference {p['mean_difference']:+.4f} ± {p['std_difference']:.4f} "
                         f"(std over {p['n_pairs']} pairs), t = {p['t']:.2f}, df {p['df']}, "
                         f"p = {p['p_two_sided']:.3f}")
        if "welch" in entry:
            w = entry["welch"]
            lines.append(f"- unpaired (Welch): difference {w['mean_difference']:+.4f} = "
                         f"{w['difference_in_seed_stds']:+.2f} pooled seed stds, t = {w['t']:.2f}, "
                         f"df {w['df']:.1f}, p = {w['p_two_sided']:.3f}")
    return "\n".join(lines) + "\n"


def write_summary(results: list[dict], settings: Settings, command: str) -> dict:
    summary = summarise(results)
    summary["command"] = command
    summary["settings"] = {"seeds": list(settings.seeds), "steps": settings.steps,
                           "warmup_steps": settings.warmup_steps, "threads": settings.threads}
    folder = budget_folder(settings)
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(folder / "summary.md", markdown(summary, command))
    return summary


def log(message: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_settings(argv: list[str]) -> Settings:
    parser = ArgumentParser(prog="layerwise_ablation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/layerwise-ablation"), help="where runs and summary go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="trainer.seed of each run pair")
    parser.add_argument("--steps", type=int, help="trainer.max_steps of every run (default: the recipes' 400)")
    parser.add_argument("--warmup-steps", type=int, help="schedule.warmup_steps (default: the recipes' 50)")
    parser.add_argument("--threads", type=int, default=0, help="trainer.threads; 0 = torch's default")
    arguments = parser.parse_args(argv)
    if len(set(arguments.seeds)) != len(arguments.seeds):
        raise RecipeError(f"--seeds: {arguments.seeds} repeats a seed")
    if arguments.steps is not None and arguments.steps <= 0:
        raise RecipeError(f"--steps: must be positive, got {arguments.steps}")
    if arguments.warmup_steps is not None and not 0 <= arguments.warmup_steps < (arguments.steps or 400):
        raise RecipeError(f"--warmup-steps: must be in [0, steps), got {arguments.warmup_steps}")
    if arguments.threads < 0:
        raise RecipeError(f"--threads: must be >= 0, got {arguments.threads}")
    return Settings(arguments.out, tuple(arguments.seeds), arguments.steps, arguments.warmup_steps, arguments.threads)


def main(argv: list[str]) -> int:
    settings = parse_settings(argv)
    command = "python tools/layerwise_ablation.py " + " ".join(argv)
    folder = budget_folder(settings)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    results = []
    for run in planned_runs(settings):
        result = finished_result(run)
        if result is not None:
            log(f"{run.name}: finished earlier, skipped (val_loss {result['val_loss']:.4f})")
        else:
            log(f"{run.name}: training ({ARMS[run.arm]}, log {folder / 'logs' / run.name}.log)")
            result = train(run, settings, folder / "logs" / f"{run.name}.log")
            log(f"{run.name}: val_loss {result['val_loss']:.4f}, val_ce {result['val_ce']:.4f} in {result['wall_s']:.0f} s")
        results.append(result)
        write_summary(results, settings, command)  # after every run: a partial table is already useful
    print(markdown(summarise(results), command), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
