"""The paper's four figures, drawn from results CSVs (one per device, or several devices' together).

Each figure has one panel per model size (the `model_size` axis) and shows, for every point, the
best cell over the axes the figure does not show (the most Token/$):

1. attention.png: Token/$ against per-device batch (`data.batch_size`), a line per attention
   implementation (`model.attention`): where FlashAttention-style kernels pay.
2. devices.png: the best Token/$ of each device per model size (bars): the cheapest hardware.
3. strategy.png: Token/$ against processes (`nproc`), a line per `strategy` (DDP, FSDP full,
   FSDP gradients and optimizer state); against the per-device batch when every cell has the
   same number of processes.
4. memory.png: Token/$ against peak memory per device, a point per batch size: whether cost
   efficiency saturates before memory is full.

A column a sweep does not have counts as one value ("all"). matplotlib is an optional dependency
(`pip install toolkit[peers]`); without it the figures are skipped with a note.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from toolkit.files import atomic_path

MODEL, BATCH, ATTENTION, STRATEGY, NPROC, DEVICE = \
    "model_size", "data.batch_size", "model.attention", "strategy", "nproc", "device"
VALUE = "tokens_per_dollar"


def read_rows(paths: list[Path]) -> list[dict[str, str]]:
    """The rows of cells that ran (status ok), from every CSV."""
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            rows.extend(row for row in csv.DictReader(handle) if row.get("status") == "ok")
    return rows


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _order(value: float | str) -> tuple[bool, float | str]:
    """Numbers first, in numeric order (batch 4 before 16), then labels."""
    return isinstance(value, str), value


def best_points(rows: list[dict[str, str]], panel: str, line: str, x: str) -> dict[str, dict[str, list]]:
    """panel -> line -> sorted [(x, best Token/$ there)]."""
    best: dict[tuple[str, str, object], float] = {}
    for row in rows:
        key = (row.get(panel, "all"), row.get(line, "all"), _number(row.get(x, "all")))
        best[key] = max(best.get(key, 0.0), float(row[VALUE]))
    grouped: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (panel_value, line_value, x_value), value in best.items():
        grouped[panel_value][line_value].append((x_value, value))
    for lines in grouped.values():
        for points in lines.values():
            points.sort(key=lambda point: _order(point[0]))
    return grouped


def strategy_axis(rows: list[dict[str, str]]) -> str:
    """The strategy figure's x: processes, or the per-device batch when every cell has one count."""
    return NPROC if len({row.get(NPROC) for row in rows}) > 1 else BATCH


def draw_figures(paths: list[Path], out_dir: Path) -> list[Path]:
    """The four PNGs in out_dir (those the CSVs have data for); their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install matplotlib): no figures drawn", file=sys.stderr)
        return []
    rows = read_rows(paths)
    if not rows:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    batch_label = "per-device batch (sequences)"
    # Strategies against the number of devices, or against the batch when a sweep has one count.
    strategy_x = strategy_axis(rows)
    strategy_label = "processes (devices)" if strategy_x == NPROC else batch_label
    for name, line, x, xlabel in (("attention", ATTENTION, BATCH, batch_label),
                                  ("strategy", STRATEGY, strategy_x, strategy_label),
                                  ("memory", BATCH, "peak_memory_mb", "peak memory per device (MB)")):
        if name == "memory":  # one point per cell: no best-of over memory values
            grouped = best_points(rows, MODEL, line, "peak_memory_mb")
        else:
            grouped = best_points(rows, MODEL, line, x)
        figure, axes = plt.subplots(1, len(grouped), figsize=(4.5 * len(grouped), 3.6), squeeze=False)
        for axis, (panel_value, lines) in zip(axes[0], sorted(grouped.items())):
            for line_value, points in sorted(lines.items(), key=lambda item: _order(_number(item[0]))):
                xs, ys = zip(*points)
                style = "o" if name == "memory" else "o-"
                axis.plot([str(v) if isinstance(v, str) else v for v in xs], ys, style, label=f"{line}={line_value}")
            axis.set_title(f"{MODEL}={panel_value}")
            axis.set_xlabel(xlabel)
            axis.set_ylabel("tokens per $")
            axis.legend(fontsize=7)
        written.append(_save(figure, out_dir / f"{name}.png", plt))
    devices = best_points(rows, MODEL, DEVICE, MODEL)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    models = sorted(devices)
    names = sorted({device for lines in devices.values() for device in lines})
    width = 0.8 / max(1, len(names))
    for index, device in enumerate(names):
        heights = [max((value for _, value in devices[model].get(device, [])), default=0.0) for model in models]
        axis.bar([position + index * width for position in range(len(models))], heights, width, label=device)
    axis.set_xticks([position + width * (len(names) - 1) / 2 for position in range(len(models))], models)
    axis.set_ylabel("best tokens per $")
    axis.legend(fontsize=7)
    written.append(_save(figure, out_dir / "devices.png", plt))
    return written


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
    return path
