"""What a training run prints on stderr (rank 0 only): a short header, then its progress.

On a terminal, with `trainer.progress` on, progress is the tqdm bar, with a second bar while a
validation runs so the first never sits frozen. Anywhere else (stderr redirected to a file, a CI or
cluster log, or `trainer.progress=false`) a `\r`-redrawn bar would be one endless line, so the run
prints plain lines instead, as HF Trainer and LitGPT do: one every `log_every` steps, at most one per
`progress_every_s` seconds (the first and the last always), with step, loss, throughput, lr and eta;
and one when a validation starts and ends. Nothing here changes what the run computes or logs to
metrics.jsonl.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from torch import nn

from toolkit.config import TrainerConfig
from toolkit.data.order import OrderedTrainSource, OrderedValidationSource
from toolkit.engine.metrics import ProgressBar
from toolkit.progress import clock, short_count


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once; an FSDP2 shard counts its full tensor)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def describe_run(parts: Any, run_dir: Path, resumed_from: Path | None, start_step: int) -> list[str]:
    """The header: where the run goes, what it resumed from, its models' sizes, its data, how it runs.

    `parts` is a toolkit.assembly.TrainingParts.
    """
    config, context = parts.config, parts.context
    lines = [f"run directory: {run_dir}"]
    if resumed_from is not None:
        lines.append(f"resumed from: {resumed_from} (step {start_step} of {config.max_steps})")
    else:
        lines.append(f"starting at step {start_step} of {config.max_steps}")
    for model in parts.models.by_name.values():
        count = count_parameters(model.module)
        label = "model" if parts.models.single else f"model {model.name}"
        size = f"{count:,} parameters" + (f" ({short_count(count)})" if count >= 1000 else "")
        lines.append(f"{label}: {type(model.module).__name__}, {size}, {model.role.value}")
    lines.append(f"data: {_describe_data(parts.train_data, parts.val_data)}")
    strategies = sorted({model.strategy.value for model in parts.models.trained if model.strategy is not None})
    how = f"{' + '.join(strategies) or 'no wrapping'} over {context.world_size} processes" \
        if context.world_size > 1 else "1 process"
    lines.append(f"precision {config.precision.value}, {how} on {context.device.type}, "
                 f"grad_accum {config.grad_accum}")
    return lines


def _describe_data(train_data: Any, val_data: Any) -> str:
    """Sizes a source built on the core's ordered sources knows; other sources say what they are."""
    if isinstance(train_data, OrderedTrainSource):
        order = train_data.order
        train = f"{order.num_items:,} training examples, {order.steps_per_epoch:,} steps per epoch"
    else:
        train = f"training source {type(train_data).__name__} (size not known)"
    if val_data is None:
        return f"{train}; no validation split"
    if isinstance(val_data, OrderedValidationSource):
        return f"{train}; {val_data.order.num_items:,} validation examples in {len(val_data.order):,} batches per rank"
    return f"{train}; validation source {type(val_data).__name__}"


class RunConsole:
    """The run's progress on stderr; silent on every rank but rank 0 (`enabled=False`)."""

    def __init__(self, config: TrainerConfig, enabled: bool, unit: str, stream: TextIO | None = None) -> None:
        self.config = config
        self.enabled = enabled
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.use_bar = enabled and config.progress and _is_terminal(self.stream)
        self.bar: ProgressBar | None = None
        self.started = time.perf_counter()
        self.start_step = 0
        self.last_line = -float("inf")  # when the last plain line printed (perf_counter seconds)

    def start(self, header: list[str], step: int) -> None:
        """Print the header, then start the bar (on a terminal) at `step`."""
        self.start_step, self.started = step, time.perf_counter()
        self.last_line = -float("inf")
        for line in header:
            self.print(line)
        if self.use_bar:
            self.bar = ProgressBar(self.config.max_steps, step, True, self.unit)

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.bar.write(text, file=self.stream)  # above the bar, which redraws below
        else:
            print(text, file=self.stream, flush=True)

    def step(self, record: dict[str, float]) -> None:
        """After each optimizer step, with the step's metrics record."""
        if not self.enabled:
            return
        per_second = record[f"{self.unit}_per_s"]
        if self.bar is not None:
            self.bar.update(record["loss"], per_second, record.get("mfu"))
            return
        step, max_steps = int(record["step"]), self.config.max_steps
        now = time.perf_counter()
        on_schedule = step % max(1, self.config.log_every) == 0
        first = self.last_line == -float("inf")
        due = first or now - self.last_line >= self.config.progress_every_s
        if not (step == max_steps or (on_schedule and due)):
            return
        self.last_line = now
        seconds_per_step = (now - self.started) / max(1, step - self.start_step)
        fields = [f"step {step}/{max_steps}", f"loss {record['loss']:.4f}", f"{per_second:,.0f} {self.unit}/s",
                  f"lr {record['lr']:.3g}"]
        if record.get("mfu") is not None:
            fields.append(f"mfu {100 * record['mfu']:.1f}%")
        fields.append(f"eta {clock(seconds_per_step * (max_steps - step))}")
        self.print(" | ".join(fields))

    def validation(self, batches: Iterable[Any], limit: int, step: int) -> Iterator[Any]:
        """`batches` passed through, shown as a second bar or as start and (every `progress_every_s`)
        progress lines; `limit` is the most batches the trainer takes (0 = all)."""
        total = len(batches) if hasattr(batches, "__len__") else None
        if limit:
            total = min(total, limit) if total is not None else limit
        if not self.enabled:
            yield from batches
            return
        if self.bar is not None:
            from tqdm import tqdm

            with tqdm(batches, total=total, desc="validation", unit="batch", leave=False, file=self.stream,
                      dynamic_ncols=True, mininterval=1.0) as shown:
                yield from shown
            return
        self.print(f"step {step}: validation ({f'{total:,} batches' if total else 'batches not counted'})")
        last = time.perf_counter()
        for index, batch in enumerate(batches):
            now = time.perf_counter()
            if self.config.progress_every_s and now - last >= self.config.progress_every_s:
                self.print(f"step {step}: validation batch {index}{f'/{total}' if total else ''}")
                last = now
            yield batch

    def validated(self, record: dict[str, float], seconds: float) -> None:
        """One line with a validation's metrics."""
        shown = ", ".join(f"{key} {value:.4g}" for key, value in record.items() if key != "step")
        self.print(f"step {int(record['step'])}: {shown} ({seconds:.1f} s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False
