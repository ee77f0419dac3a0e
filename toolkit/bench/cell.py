"""What every rank of one benchmark cell runs, under torchrun:

    torchrun --nproc_per_node N -m toolkit.bench.cell CELL_DIR

CELL_DIR/spec.json names the recipe, its overrides and how many steps to run. The cell builds the
run exactly as `toolkit-train` would (toolkit.assembly), then runs bare training steps (no logging,
evaluation or checkpoints), timing each one to the device's completion. Rank 0 writes the raw
figures to CELL_DIR/result.json; the arithmetic on them is toolkit.bench.measure's, in the parent.
A rank that fails writes CELL_DIR/failure.rank<r>.json (status oom or failed, one-line reason)
and exits 1, so torchrun stops the others.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from toolkit.files import atomic_write_text

SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
OUT_OF_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def failure_file(rank: int) -> str:
    return f"failure.rank{rank}.json"


def classify(error: BaseException) -> tuple[str, str]:
    """(status, one-line reason): `oom` for any out-of-memory error (CUDA's or the CPU allocator's)."""
    from toolkit.errors import ToolkitError

    text = error.one_line() if isinstance(error, ToolkitError) else f"{type(error).__name__}: {error}"
    reason = " ".join(text.split())[:400]
    text = str(error).lower()
    out_of_memory = isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(
        marker in text for marker in OUT_OF_MEMORY_MARKERS)
    return ("oom" if out_of_memory else "failed"), reason


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """The most memory this rank held: CUDA's allocator peak, or the process's peak RSS on CPU
    (which includes the Python interpreter and libraries, some hundreds of MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reduce_over_ranks(values: list[float], device: torch.device, op: str) -> list[float]:
    """Element-wise max or sum of a list of numbers over every rank (the list itself on one rank)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return values
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


def measure_steps(trainer: Any, total_steps: int) -> dict[str, Any]:
    """Train `total_steps` bare steps of a built trainer; rank 0's raw figures (every rank calls it)."""
    context = trainer.context
    batches = iter(trainer.parts.train_data)
    seconds, tokens, losses, flops = [], [], [], []
    for _ in range(total_steps):
        synchronize(context.device)
        started = time.perf_counter()
        summary = trainer.run_step(batches)
        synchronize(context.device)  # the optimizer step after the loss is read is queued work
        seconds.append(time.perf_counter() - started)
        tokens.append(summary["items"])
        losses.append(summary["loss"])
        flops.append(summary["flops"])
    seconds = reduce_over_ranks(seconds, context.device, "max")  # a step lasts as long as its slowest rank
    memory, memory_kind = peak_memory_mb(context.device)
    memory = reduce_over_ranks([memory], context.device, "max")[0]
    measured_peak = reduce_over_ranks([trainer.peak_flops], context.device, "sum")[0] / context.world_size
    module = trainer.models.trained[0].module
    return {
        "status": "ok", "world_size": context.world_size,
        "device_name": torch.cuda.get_device_name(context.device) if context.device.type == "cuda" else "cpu",
        "precision": trainer.config.precision.value,
        "parameters": sum(p.numel() for p in {id(p): p for p in module.parameters()}.values()),
        "step_seconds": seconds, "step_tokens": tokens, "losses": losses,
        "flops_per_token": flops[-1] / tokens[-1] if tokens[-1] else 0.0,
        "peak_memory_mb": memory, "memory_kind": memory_kind,
        "measured_peak_flops_per_device": measured_peak,
    }


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the spec's run as toolkit-train would, measure `spec["total_steps"]` steps, leave the group."""
    from toolkit.assembly import build_trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    recipe = load_recipe(spec["recipe"], spec["overrides"], get_registries())
    trainer = build_trainer(recipe)  # measures the matmul peak when trainer.peak_flops is 0
    finished = False
    try:
        result = measure_steps(trainer, spec["total_steps"])
        finished = True
        return result
    finally:
        trainer.close(finished)  # every rank measured: wait for each other before leaving the group


def main(argv: list[str]) -> int:
    import os

    cell_dir = Path(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = run_cell(json.loads((cell_dir / SPEC_FILE).read_text()))
    except BaseException as error:  # noqa: BLE001 - every failure becomes the cell's one-line reason
        status, reason = classify(error)
        atomic_write_text(cell_dir / failure_file(rank), json.dumps({"status": status, "reason": reason}))
        print(f"error: rank {rank}: {reason}", file=sys.stderr)
        return 1
    if rank == 0:
        atomic_write_text(cell_dir / RESULT_FILE, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
