"""The one training loop every model family shares.

The trainer owns precision, gradient accumulation, clipping, the optimizer step and schedule, EMA,
evaluation, logging, checkpoints and distributed wrapping. It never asks what model it holds: the
task turns (model, batch) into a loss, the dataset yields batches, and the model is an nn.Module.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.data import ShardInfo
from toolkit import checkpoint as ckpt
from toolkit.engine.checkpoint import save_checkpoint
from toolkit.engine import distributed
from toolkit.engine.ema import ExponentialMovingAverage
from toolkit.engine.malloc import keep_freed_memory_for_reuse
from toolkit.engine.metrics import MetricsLog, ProgressBar, measure_peak_flops
from toolkit.engine.state import load_training_state, training_state_dicts
from toolkit.errors import TrainingError
from toolkit.recipe import Recipe
from toolkit.task import StepOutput


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float]


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


class Trainer:
    """Builds a recipe's components and trains; `fit()` runs to `trainer.max_steps`."""

    def __init__(self, recipe: Recipe, resume: str | None = None) -> None:
        self.recipe = recipe
        self.config = recipe.trainer
        if self.config.precision not in ("fp32", "bf16"):
            raise TrainingError(f"trainer.precision: '{self.config.precision}' is not fp32 or bf16")
        if self.config.grad_accum < 1 or self.config.max_steps < 0:
            raise TrainingError("trainer.grad_accum must be >= 1 and trainer.max_steps >= 0")
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        self.context = distributed.setup(recipe.dist)
        if self.context.device.type == "cpu":
            keep_freed_memory_for_reuse()
        self.run_dir = Path(self.config.out_dir)
        self.step = 0
        self.last_checkpoint: Path | None = None
        resume_from = self._find_resume_checkpoint(resume)

        torch.manual_seed(self.config.seed)  # same initial weights on every rank
        with torch.device(self.context.device):
            self.raw_model: nn.Module = recipe.components["model"].build()
        loss_spec = recipe.components.get("loss")
        self.task = recipe.components["task"].build(loss_spec.build() if loss_spec else None)
        self.callbacks = [spec.build() for spec in recipe.callbacks]
        model = self.raw_model
        if self.config.compile:
            # Static shapes: training batches never change shape, and dynamic-shape graphs
            # have failed to compile in inductor (torch 2.11 on CUDA) where static ones work.
            model = torch.compile(model, dynamic=False)
        self.model = distributed.wrap_model(model, recipe.dist, self.context)
        self.optimizer = recipe.components["optim"].build(self.model)
        schedule_spec = recipe.components.get("schedule")
        self.scheduler = schedule_spec.build(self.optimizer, self.config.max_steps) if schedule_spec else None
        self.ema = ExponentialMovingAverage(self.raw_model, self.config.ema_decay) if self.config.ema_decay > 0 else None

        shard = ShardInfo(self.context.rank, self.context.world_size, self.config.seed, self.config.grad_accum)
        data_spec = recipe.components["data"]
        self.train_data = data_spec.build("train", shard)
        self.val_data = data_spec.build("val", shard)
        self.item_unit = getattr(self.task, "item_unit", "items")

        if self.context.is_main:
            self._prepare_run_dir()
        if resume_from is not None:
            self.step = load_training_state(self, resume_from)
            self.last_checkpoint = resume_from
        # A resumed run rewrites history from its checkpoint on; a fresh one starts an empty log.
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.context.is_main, keep_until_step=self.step)
        self.peak_flops = self.config.peak_flops or measure_peak_flops(self.context.device, self.config.precision)

    # -- set-up -----------------------------------------------------------------------------------

    def _find_resume_checkpoint(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        if resume == "auto":
            latest = ckpt.latest_checkpoint(self.run_dir)
            return ckpt.resolve_checkpoint(latest) if latest else None
        return ckpt.resolve_checkpoint(resume)

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.run_dir / "recipe.yaml.tmp"
        temporary.write_text(self.recipe.to_yaml())
        temporary.replace(self.run_dir / "recipe.yaml")
        # Files the data or the model want kept with the run: a tokenizer, a synset vocabulary, a
        # transfer report. Each component names them through an optional `run_files()`.
        for component in (self.train_data, self.raw_model):
            run_files = getattr(component, "run_files", None)
            for name, source in (run_files() if callable(run_files) else {}).items():
                shutil.copyfile(source, self.run_dir / name)

    def _autocast(self):
        enabled = self.config.precision == "bf16"
        return torch.autocast(self.context.device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        config = self.config
        progress = ProgressBar(config.max_steps, self.step, config.progress and self.context.is_main, self.item_unit)
        batches = iter(self.train_data)
        final_metrics: dict[str, float] = {}
        self.model.train()
        try:
            while self.step < config.max_steps:
                started = time.perf_counter()
                summary = self._train_step(batches)
                elapsed = time.perf_counter() - started
                self.step += 1
                items_per_second = summary["items"] / elapsed
                mfu = summary["flops"] / elapsed / self.peak_flops if summary["flops"] else None
                progress.update(summary["loss"], items_per_second, mfu)
                if self.step % max(1, config.log_every) == 0 or self.step == config.max_steps:
                    record = {"step": self.step, **{k: v for k, v in summary.items() if k not in ("items", "flops")},
                              f"{self.item_unit}_per_s": items_per_second, "step_time_s": elapsed}
                    if mfu is not None:
                        record["mfu"] = mfu
                    self.metrics.write(record)
                    final_metrics.update(record)
                if config.eval_every and self.step % config.eval_every == 0 and self.step < config.max_steps:
                    final_metrics.update(self.evaluate())
                if config.save_every and self.step % config.save_every == 0 and self.step < config.max_steps:
                    self.save()
            final_metrics.update(self.evaluate())
            if self.last_checkpoint is None or self.last_checkpoint.name != ckpt.checkpoint_name(self.step):
                self.save()
        finally:
            progress.close()
        return TrainResult(self.step, self.run_dir, self.last_checkpoint, final_metrics)

    def _train_step(self, batches) -> dict[str, float]:
        accum = self.config.grad_accum
        loss_sum = torch.zeros((), device=self.context.device)  # stays on the device: one sync per step
        items, flops = 0, 0.0
        metric_sums: dict[str, torch.Tensor | float] = {}
        for micro_step in range(accum):
            try:
                batch = move_to(next(batches), self.context.device)
            except StopIteration:
                raise TrainingError("the training data ran out; a training dataset must repeat forever") from None
            last = micro_step == accum - 1
            sync = self.model.no_sync() if (not last and hasattr(self.model, "no_sync")) else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    output: StepOutput = self.task.training_step(self.model, batch)
                (output.loss / accum).backward()
            loss_sum += output.loss.detach().float()
            items += output.items
            flops += output.flops or 0.0
            for key, value in output.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + (value.detach().float() if torch.is_tensor(value) else value)
        grad_norm = None
        if self.config.clip_grad > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        # Mean loss across micro-steps and ranks; items and FLOPs summed over ranks.
        keys = sorted(metric_sums)
        packed = torch.tensor([loss_sum.item() / accum, items, flops,
                               *[float(metric_sums[k]) / accum for k in keys]],
                              dtype=torch.float64, device=self.context.device)  # nccl reduces device tensors
        distributed.all_reduce_sum(packed)
        world = self.context.world_size
        loss = packed[0].item() / world
        if not math.isfinite(loss) or (grad_norm is not None and not torch.isfinite(grad_norm)):
            last = self.last_checkpoint or "none saved yet"
            raise TrainingError(
                f"loss became {loss} at step {self.step + 1}; stopped without saving",
                hint=f"last good checkpoint: {last}; lower optim.lr or check the data",
            )
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.raw_model)
        summary = {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                   "items": packed[1].item(), "flops": packed[2].item()}
        if grad_norm is not None:
            summary["grad_norm"] = float(grad_norm)
        summary.update({key: packed[3 + i].item() / world for i, key in enumerate(keys)})
        return summary

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and the task's metrics (item-weighted over the split or `eval_batches`).

        Each metric a task's `validation_step` returns is logged as `val_<name>` (accuracy for a
        classifier, say); a task with `val_perplexity = True` also gets `val_ppl`.
        """
        if self.val_data is None:
            return {}
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.context.device)
        items = 0
        metric_sums: dict[str, torch.Tensor] = {}
        # eval_batches counts micro-batches over all ranks, so a partial evaluation covers the
        # same windows whatever the world size.
        per_rank = -(-self.config.eval_batches // self.context.world_size)
        for index, batch in enumerate(self.val_data):
            if per_rank and index >= per_rank:
                break
            with self._autocast():
                output = self.task.validation_step(self.model, move_to(batch, self.context.device))
            loss_sum += output.loss.double() * output.items
            items += output.items
            for key, value in output.metrics.items():
                value = torch.as_tensor(value, device=self.context.device).detach().double()
                metric_sums[key] = metric_sums.get(key, 0.0) + value * output.items
        self.model.train()
        if hasattr(self.model, "reshard"):  # FSDP2 leaves the root unsharded after a forward-only pass
            self.model.reshard()
        # One all-reduce for everything; a task returns the same metric names on every batch.
        keys = sorted(metric_sums)
        packed = torch.stack([loss_sum, torch.tensor(float(items), dtype=torch.float64, device=self.context.device),
                              *[metric_sums[key] for key in keys]])
        distributed.all_reduce_sum(packed)
        if packed[1] == 0:
            return {}
        val_loss = (packed[0] / packed[1]).item()
        record = {"step": self.step, "val_loss": val_loss}
        if getattr(self.task, "val_perplexity", False):
            record["val_ppl"] = math.exp(min(val_loss, 80.0))
        record.update({f"val_{key}": (packed[2 + i] / packed[1]).item() for i, key in enumerate(keys)})
        self.metrics.write(record)
        for callback in self.callbacks:
            callback.on_evaluate(self.step, record)
        return record

    def save(self) -> Path:
        content = training_state_dicts(self)  # every rank takes part (FSDP gathers, RNG gathered)
        if self.context.is_main:
            self.last_checkpoint = save_checkpoint(self.run_dir, content, self.config.keep_last)
        else:
            self.last_checkpoint = self.run_dir / ckpt.checkpoint_name(self.step)
        distributed.barrier()
        for callback in self.callbacks:
            callback.on_save(self.step, self.last_checkpoint)
        return self.last_checkpoint

    def close(self) -> None:
        distributed.teardown()

