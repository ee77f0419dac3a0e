"""Run logging: the JSONL metrics file, the progress bar, and the matmul peak used for MFU."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from toolkit.files import atomic_write_text


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int = 0) -> None:
        """Lines of an earlier run with a step above `keep_until_step` are dropped."""
        self.path = path
        self.enabled = enabled
        if enabled and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if line.strip() and json.loads(line).get("step", 0) <= keep_until_step:
                        kept.append(line)
                except json.JSONDecodeError:  # a line cut short by a kill: drop it
                    continue
            atomic_write_text(path, "".join(line + "\n" for line in kept))  # a kill here keeps the old log

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {key: _plain(value) for key, value in record.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(clean) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class ProgressBar:
    """tqdm bar over optimizer steps showing loss, throughput, MFU; ETA comes from tqdm."""

    def __init__(self, total: int, initial: int, enabled: bool, unit: str) -> None:
        self.unit = unit
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                        dynamic_ncols=True, mininterval=1.0, leave=True)

    def update(self, loss: float, items_per_second: float, mfu: float | None) -> None:
        postfix = {"loss": f"{loss:.4f}", f"{self.unit}/s": f"{items_per_second:,.0f}"}
        if mfu is not None:
            postfix["mfu"] = f"{100 * mfu:.1f}%"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class MatmulPeak:
    """The peak MFU is measured against: FLOP/s of a square matmul in the run's precision.

    Measured rather than looked up so that MFU is honest on whatever machine runs (a busy machine
    lowers both the peak and the run's throughput alike). A GPU needs a large matmul (8192, about
    1.5 ms on an H100) and several launches per synchronisation, or the figure is launch latency
    rather than arithmetic; 1024 already saturates a CPU. `tools/bench_lm.py` samples this same
    probe between its timed steps, so the trainer's MFU and the benchmark's share one definition.
    """

    def __init__(self, device: torch.device, precision: str, size: int = 0) -> None:
        self.device = device
        self.size = size if size > 0 else (8192 if device.type == "cuda" else 1024)
        self.launches_per_sync = 10 if device.type == "cuda" else 1
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # A generator of its own: measuring must not move the run's RNG streams.
        generator = torch.Generator(device=device).manual_seed(0)
        self.left = torch.randn(self.size, self.size, device=device, dtype=dtype, generator=generator)
        self.right = torch.randn(self.size, self.size, device=device, dtype=dtype, generator=generator)
        for _ in range(3):
            self.left @ self.right
        _synchronize(device)

    def sample(self, seconds: float = 0.05) -> float:
        """FLOP/s over at least `seconds` of back-to-back matmuls."""
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(self.launches_per_sync):
                self.left @ self.right
            count += self.launches_per_sync
            _synchronize(self.device)
        return 2 * self.size**3 * count / (time.perf_counter() - start)


def measure_peak_flops(device: torch.device, precision: str, size: int = 0, seconds: float = 1.0) -> float:
    """The median of ten `MatmulPeak` samples, after as long again of untimed matmuls.

    Measured cold, a CPU reads 8-16% low (bf16 397 against 428 GFLOP/s warm, fp32 158 against
    188, on the 2-core build machine), which would overstate MFU by as much.
    """
    probe = MatmulPeak(device, precision, size)
    probe.sample(seconds / 2)  # warm-up: clocks, caches and the allocator settle
    return statistics.median(probe.sample(seconds / 20) for _ in range(10))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
