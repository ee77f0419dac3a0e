"""What a model, task or dataset may offer the engine and the CLIs, as typed Protocols.

Each capability is optional. The engine checks for it with `isinstance(obj, Protocol)` on the
object a plugin built (never on a DDP/FSDP/compile wrapper, never by peeling wrappers), so a
plugin author can read here, in one place, everything the core will ever ask of a component.

Models (`register_models`):
    TrainingFlops   FLOPs per item, so the trainer reports MFU
    ShardingUnits   the submodules FSDP2 shards one by one (usually the blocks)
    LayerSummary    lines for `toolkit-train --dry-run`
    RunFiles        files the engine copies into the run directory (datasets may offer it too)
    FreshState      state-dict keys a model starting from a `source:` run keeps fresh (not loaded)
Tasks (`register_tasks`):
    ItemUnit        what one item is ("tokens", "images"), for throughput (tokens/s)
    ReportsPerplexity  the engine logs val_ppl = exp(val_loss)
    ManyModels      the task uses several named models, trained and frozen (toolkit.task.Role)
    CustomLoop      the task drives its own inner loop through a toolkit.engine.loop.StepContext
    TaskState       state of the task's own that a resumed run needs (an adaptive coefficient),
                    saved as `task_state.json` in every checkpoint
Evaluated models (what an evaluator's `load_model` returns, for `toolkit-eval`):
    Identified      names exactly what was loaded, so that a changed model never reuses cached samples
    ReportsTruncation  one line on inputs cut to the model's context (a warning in the results)
    HoldsNetwork    keeps its network as `.model`, which `--decoder` may replace with a wrapper
Decoders (`register_decoders`, toolkit.decoding):
    ReportsDecoding one line of what the decoding path did (tokens/s, bytes read), for both CLIs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class TrainingFlops(Protocol):
    def training_flops_per_item(self, sequence_length: int) -> float:
        """Forward plus backward FLOPs for one item (a token, an image) of a training batch.

        `sequence_length` is how many items one example holds (tokens per sequence for a language
        model, whose attention cost grows with it; 1 for an image classifier).
        """
        ...


@runtime_checkable
class ShardingUnits(Protocol):
    def fsdp_units(self) -> list[nn.Module]:
        """Submodules for FSDP2 to shard one at a time (then the root), so that parameters are
        gathered one block at a time."""
        ...


@runtime_checkable
class LayerSummary(Protocol):
    def layer_summary(self) -> list[str]:
        """One human-readable line per block, printed by `toolkit-train --dry-run`."""
        ...


@runtime_checkable
class RunFiles(Protocol):
    def run_files(self) -> dict[str, Path]:
        """Files to keep with the run: name in the run directory -> source path (a tokenizer, a
        synset vocabulary). Copied when the run starts."""
        ...


@runtime_checkable
class FreshState(Protocol):
    def fresh_state_keys(self) -> list[str]:
        """State-dict keys that keep their initial values when the model starts from a `source:`
        run: the source need not have them and they are not read from it (a new router put on a
        model trained with another one). Every other key is loaded strictly."""
        ...


@runtime_checkable
class ItemUnit(Protocol):
    item_unit: str  # "tokens", "images": the engine reports <item_unit>/s


@runtime_checkable
class ReportsPerplexity(Protocol):
    val_perplexity: bool  # True: the engine logs val_ppl = exp(val_loss) beside val_loss


@runtime_checkable
class ManyModels(Protocol):
    model_roles: Mapping[str, Any]  # model name -> toolkit.task.Role (trained or frozen)


@runtime_checkable
class CustomLoop(Protocol):
    def train_step(self, context: Any) -> None:
        """One trainer step of the task's own making (several updates, rollouts), using only the
        services of `context` (a toolkit.engine.loop.StepContext): batches, autocast, micro-steps
        with `no_sync`, backward, the clipped and NaN-guarded optimizer update, logging."""
        ...


@runtime_checkable
class TaskState(Protocol):
    def task_state_dict(self) -> dict[str, Any]:
        """The task's own state, JSON-able (numbers, strings, lists, maps): written as
        `task_state.json` with every checkpoint. Python floats survive JSON exactly, so a resumed
        run continues bit for bit. Weights and optimizer state are the engine's, never here."""
        ...

    def load_task_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `task_state_dict` returned (called on resume, before training continues)."""
        ...


@runtime_checkable
class Identified(Protocol):
    identity: str  # e.g. the resolved checkpoint directory; part of the evaluation cache's key


@runtime_checkable
class ReportsTruncation(Protocol):
    def truncation_report(self) -> str | None:
        """How many inputs were longer than the context and cut, or None when none were."""
        ...


@runtime_checkable
class HoldsNetwork(Protocol):
    model: nn.Module  # the network the handle scores with


@runtime_checkable
class ReportsDecoding(Protocol):
    def decoding_report(self) -> str | None:
        """One line of what the decoding path did, or None before it ran."""
        ...


def item_unit(task: object) -> str:
    return task.item_unit if isinstance(task, ItemUnit) else "items"


def reports_perplexity(task: object) -> bool:
    return isinstance(task, ReportsPerplexity) and bool(task.val_perplexity)


def identity(model: object) -> str:
    return str(model.identity or "") if isinstance(model, Identified) else ""
