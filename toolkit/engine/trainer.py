"""The one training loop every model family shares.

The trainer is handed built parts (toolkit.assembly) and owns the loop: steps through the task
(the default step, or the task's own through a StepContext), the schedule, evaluation, logging,
callbacks and checkpoints. It never asks what model it holds; what it saves is a named map of
objects that save and load themselves (toolkit.engine.state).
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit import checkpoint as ckpt
from toolkit.capabilities import CustomLoop, TaskState, item_unit, reports_perplexity
from toolkit.config import CheckpointFormat
from toolkit.engine import distributed
from toolkit.engine.callbacks import RunInfo
from toolkit.engine.checkpoint import begin_checkpoint, finish_checkpoint, write_checkpoint
from toolkit.engine.console import RunConsole, describe_run
from toolkit.engine.hyperparameters import recipe_groups, restore_recipe_hyperparameters
from toolkit.engine.loop import StepContext, default_train_step, move_to, run_autocast
from toolkit.engine.metrics import MetricsLog, measure_peak_flops
from toolkit.engine.sharded import ShardedTrainingState, first_failure, is_sharded_checkpoint
from toolkit.engine.state import (ModelWeights, OptimizerState, Progress, StateOf, TaskStateFile, load_states,
                                  save_states)
from toolkit.errors import CheckpointError, Interrupted
from toolkit.files import atomic_write_text

__all__ = ["TrainResult", "Trainer", "move_to"]


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float]


class StopSignal:
    """SIGINT and SIGTERM set a flag the loop reads after each step; a second one stops at once.
    Handlers can only be installed from the main thread; elsewhere the defaults stay."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def without_step(record: dict[str, float]) -> dict[str, float]:
    """A metrics record as callbacks get it: the step is their own argument."""
    return {key: value for key, value in record.items() if key != "step"}


class Trainer:
    """Trains built parts to `trainer.max_steps`; `fit()` runs, `close()` leaves the process group."""

    def __init__(self, parts, resume: str | None = None) -> None:  # parts: toolkit.assembly.TrainingParts
        self.parts = parts
        self.config = parts.config
        self.context = parts.context
        self.models = parts.models
        self.task = parts.task
        self.item_unit = item_unit(parts.task)
        self.run_dir = Path(self.config.out_dir)
        self.last_checkpoint: Path | None = None
        self.progress = Progress(parts.train_data, self.context.rank, self.context.world_size)
        self.states = self._checkpoint_states()
        self.sharded_state = ShardedTrainingState(self.models.trained_modules(), parts.optimizer, parts.ema)
        self._ema_target = self.models.trained_modules()
        resume_from = self._find_resume_checkpoint(resume)
        # Measured before any state is restored (and with a generator of its own), so that the
        # restored RNG streams are the last thing set before training continues.
        self.peak_flops = self.config.peak_flops or measure_peak_flops(self.context.device, self.config.precision)
        if resume_from is not None:  # restored (and so checked) before the run directory is touched
            wanted = recipe_groups(self.parts.optimizer)
            self._load(resume_from)
            self.last_checkpoint = resume_from
            changed = restore_recipe_hyperparameters(self.parts.optimizer, self.parts.scheduler, wanted)
            if changed and self.context.is_main:  # only a resume with --accept-changes gets here
                print(f"note: the recipe's optimizer settings replace the checkpoint's: {', '.join(changed)}",
                      file=sys.stderr)
        self.resumed_from = resume_from
        self.console = RunConsole(self.config, self.context.is_main, self.item_unit)
        if self.context.is_main:
            self._prepare_run_dir()
        # A resumed run rewrites history from its checkpoint on; a fresh one starts an empty log.
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.context.is_main, keep_until_step=self.step)

    @property
    def step(self) -> int:
        return self.progress.step

    # -- set-up -----------------------------------------------------------------------------------

    def _checkpoint_states(self) -> dict:
        """File name -> the object that saves and loads it."""
        states = {ckpt.weights_file(model.name): ModelWeights(model.module, ckpt.weights_file(model.name))
                  for model in self.models.trained}
        states["optimizer.pt"] = OptimizerState(self.parts.optimizer, self.models.trained_modules())
        if self.parts.scheduler is not None:
            states["scheduler.json"] = StateOf(self.parts.scheduler)
        if self.parts.ema is not None:  # an older checkpoint without one starts it from the weights
            weights = ModelWeights(self.models.trained_modules(), "")
            states["ema.safetensors"] = StateOf(self.parts.ema, fallback=weights.state_dict)
        if isinstance(self.task, TaskState):  # an adaptive coefficient, say: what a resume needs besides weights
            states["task_state.json"] = TaskStateFile(self.task, self.parts.task_name)
        states["trainer_state.json"] = self.progress
        return states

    def _unsharded_states(self) -> dict:
        """The states a sharded checkpoint keeps in its own files (not the weights, optimizer, EMA)."""
        sharded = {ckpt.weights_file(model.name) for model in self.models.trained} | {"optimizer.pt", "ema.safetensors"}
        return {name: state for name, state in self.states.items() if name not in sharded}

    def _load(self, checkpoint: Path) -> None:
        """Restore every state from a full or a sharded checkpoint (whatever this run writes)."""
        if is_sharded_checkpoint(checkpoint):
            try:
                self.sharded_state.load(checkpoint)
            except CheckpointError as error:
                raise CheckpointError(f"{checkpoint}: cannot resume from it: {error.message}") from error
            load_states(checkpoint, self._unsharded_states())
        else:
            load_states(checkpoint, self.states)

    def _find_resume_checkpoint(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        if resume == "auto":
            latest = ckpt.latest_checkpoint(self.run_dir)
            return ckpt.resolve_checkpoint(latest) if latest else None
        return ckpt.resolve_checkpoint(resume)

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "recipe.yaml", self.parts.recipe_yaml)
        # Files the data or the models keep with the run: a tokenizer, a synset vocabulary.
        for name, source in self.parts.run_files.items():
            shutil.copyfile(source, self.run_dir / name)

    def _run_info(self) -> RunInfo:
        return RunInfo(self.run_dir, self.context.rank, self.context.world_size, self.step,
                       self.config.max_steps, self.item_unit)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        config = self.config
        self.console.start(describe_run(self.parts, self.run_dir, self.resumed_from, self.step), self.step)
        batches = iter(self.parts.train_data)
        final_metrics: dict[str, float] = {}
        for callback in self.parts.callbacks:
            callback.on_train_start(self._run_info())
        self.models.train()
        stop_signal = StopSignal()
        try:
            while self.step < config.max_steps:
                started = time.perf_counter()
                step_context = self._step(batches)
                elapsed = time.perf_counter() - started
                self.progress.step += 1
                record = self._step_record(step_context.summary(), elapsed)
                self.console.step(record)
                for callback in self.parts.callbacks:
                    callback.on_step_end(self.step, without_step(record))
                if self.step % max(1, config.log_every) == 0 or self.step == config.max_steps:
                    self.metrics.write(record)
                    final_metrics.update(record)
                if config.eval_every and self.step % config.eval_every == 0 and self.step < config.max_steps:
                    final_metrics.update(self.evaluate())
                periodic = config.save_every and self.step % config.save_every == 0
                if (periodic or step_context.save_requested) and self.step < config.max_steps:
                    self.save()
                if self._agreed(stop_signal.received is not None) and self.step < config.max_steps:
                    self._stop(stop_signal.received or signal.SIGTERM)
            final_metrics.update(self.evaluate())
            if self.last_checkpoint is None or self.last_checkpoint.name != ckpt.checkpoint_name(self.step):
                self.save()
        finally:
            stop_signal.restore()
            self.console.close()
        for callback in self.parts.callbacks:
            callback.on_train_end(self.step, final_metrics)
        return TrainResult(self.step, self.run_dir, self.last_checkpoint, final_metrics)

    def _agreed(self, flag: bool) -> bool:
        """Every rank's view of a local flag (a signal reaches ranks at different moments)."""
        return distributed.any_rank(flag) if self.context.distributed else flag

    def _stop(self, signal_number: int) -> None:
        """Checkpoint the step just completed, then stop (a scheduler's SIGTERM before preemption)."""
        if self.last_checkpoint is None or self.last_checkpoint.name != ckpt.checkpoint_name(self.step):
            self.save()
        name = signal.Signals(signal_number).name
        raise Interrupted(f"stopped by {name} at step {self.step}; saved {self.last_checkpoint}",
                          hint="continue with --resume auto", signal_number=signal_number)

    def _step(self, batches) -> StepContext:
        ema, trained = self.parts.ema, self._ema_target
        context = StepContext(self.models, self.parts.optimizer, batches, self.config, self.context, self.step,
                              after_update=(lambda: ema.update(trained)) if ema is not None else None,
                              last_checkpoint=str(self.last_checkpoint or "none saved yet"))
        if isinstance(self.task, CustomLoop):
            self.task.train_step(context)
        else:
            default_train_step(self.task, context)
        if self.parts.scheduler is not None:
            self.parts.scheduler.step()
        return context

    def run_step(self, batches) -> dict[str, float]:
        """One training step with no logging, evaluation or saving (for benchmarks): its summary."""
        return self._step(batches).summary()

    def _step_record(self, summary: dict[str, float], elapsed: float) -> dict[str, float]:
        items, flops = summary.pop("items"), summary.pop("flops")
        record = {"step": self.step, "loss": summary.pop("loss"), "lr": self.parts.optimizer.param_groups[0]["lr"],
                  **summary, f"{self.item_unit}_per_s": items / elapsed, "step_time_s": elapsed}
        if flops:  # FLOPs summed over ranks, against the peak of every rank's device together
            record["mfu"] = flops / elapsed / (self.peak_flops * self.context.world_size)
        return record

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and the task's metrics (item-weighted over the split or `eval_batches`).

        Each metric a task's `validation_step` returns is logged as `val_<name>` (accuracy for a
        classifier, say); a task that reports perplexity also gets `val_ppl`.
        """
        if self.parts.val_data is None:
            return {}
        self.models.eval()
        device = self.context.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        items = 0
        metric_sums: dict[str, torch.Tensor] = {}
        # eval_batches counts micro-batches over all ranks, so a partial evaluation covers the
        # same windows whatever the world size.
        per_rank = -(-self.config.eval_batches // self.context.world_size)
        models = self.models.for_task()
        started = time.perf_counter()
        for index, batch in enumerate(self.console.validation(self.parts.val_data, per_rank, self.step)):
            if per_rank and index >= per_rank:
                break
            with run_autocast(self.config, self.context.device):
                output = self.task.validation_step(models, move_to(batch, device))
            loss_sum += output.loss.double() * output.items
            items += output.items
            for key, value in output.metrics.items():
                value = torch.as_tensor(value, device=device).detach().double()
                metric_sums[key] = metric_sums.get(key, 0.0) + value * output.items
        self.models.train()
        self.models.reshard()
        # One all-reduce for everything; a task returns the same metric names on every batch.
        keys = sorted(metric_sums)
        packed = torch.stack([loss_sum, torch.tensor(float(items), dtype=torch.float64, device=device),
                              *[metric_sums[key] for key in keys]])
        distributed.all_reduce_sum(packed)
        if packed[1] == 0:
            return {}
        val_loss = (packed[0] / packed[1]).item()
        record = {"step": self.step, "val_loss": val_loss}
        if reports_perplexity(self.task):
            record["val_ppl"] = math.exp(min(val_loss, 80.0))
        record.update({f"val_{key}": (packed[2 + i] / packed[1]).item() for i, key in enumerate(keys)})
        self.metrics.write(record)
        self.console.validated(record, time.perf_counter() - started)
        for callback in self.parts.callbacks:
            callback.on_evaluate(self.step, without_step(record))
        return record

    def save(self) -> Path:
        if self.config.checkpoint_format == CheckpointFormat.sharded:
            failure = self._save_sharded()
        else:
            failure = self._save_full()
        # Every rank learns whether the write worked, so none waits for a save that failed.
        if distributed.any_rank(failure is not None):
            reason = " ".join(f"{type(failure).__name__}: {failure}".split()) if failure else "it failed on rank 0"
            raise CheckpointError(f"{self.run_dir / ckpt.checkpoint_name(self.step)}: could not save the "
                                  f"checkpoint ({reason})", hint=f"last good checkpoint: {self.last_checkpoint}")
        self.last_checkpoint = self.run_dir / ckpt.checkpoint_name(self.step)
        for callback in self.parts.callbacks:
            callback.on_save(self.step, self.last_checkpoint)
        return self.last_checkpoint

    def _save_full(self) -> Exception | None:
        files = save_states(self.states)  # every rank takes part (FSDP gathers, RNG gathered)
        if self.context.is_main:
            try:
                write_checkpoint(self.run_dir, self.step, files, self.parts.recipe_yaml, self.config.keep_last)
            except Exception as error:  # noqa: BLE001 - a full disk, a read-only directory: told to every rank
                return error
        return None

    def _save_sharded(self) -> Exception | None:
        """Rank 0 makes the temporary directory, every rank writes its shards into it (DCP's
        collective save; rank 0 writes the JSON metadata last), rank 0 adds the other files and
        renames it into place. The run directory must be one that every rank sees."""
        from torch.distributed.checkpoint.api import CheckpointException  # slow to import: only here

        temporary, failure = None, None
        if self.context.is_main:
            try:
                temporary = begin_checkpoint(self.run_dir, self.step)
            except Exception as error:  # noqa: BLE001 - told to every rank below
                failure = error
        temporary = distributed.gather_objects(str(temporary) if temporary else None)[0]
        if temporary is None:
            return failure or RuntimeError("rank 0 could not create the checkpoint directory")
        temporary = Path(temporary)
        files = {}
        try:
            files = self.sharded_state.save(temporary)
        except (Exception, CheckpointException) as error:  # noqa: BLE001 - DCP raises any rank's failure on every rank
            failure = first_failure(error)
        files.update(save_states(self._unsharded_states()))  # every rank takes part (RNG gathered)
        if distributed.any_rank(failure is not None):
            if self.context.is_main:
                shutil.rmtree(temporary, ignore_errors=True)
            return failure or RuntimeError("writing the shards failed on another rank")
        if self.context.is_main:
            try:
                finish_checkpoint(self.run_dir, self.step, temporary, files, self.parts.recipe_yaml,
                                  self.config.keep_last)
            except Exception as error:  # noqa: BLE001
                return error
        return None

    def close(self, finished: bool = False) -> None:
        """Leave the process group; `finished`: fit() returned on every rank (distributed.teardown)."""
        distributed.teardown(synchronize=finished)
