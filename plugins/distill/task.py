"""The `distill` task: a trained student learns a frozen teacher's next-token distribution.

Loss per target token (Hinton et al., 2015): alpha * T^2 * KL(softmax(teacher / T) || softmax(
student / T)) + (1 - alpha) * cross-entropy with the data's next token. The teacher runs without
gradients; positions whose label is -100 (padding) are left out of both terms.

It drives its own inner loop through the trainer's StepContext, as RL tasks do: each batch is
used for `epochs` passes, each pass split into `minibatches` shuffled row groups, one optimizer
update per group. The shuffles draw from torch's RNG, which checkpoints restore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import DataError, RecipeError
from toolkit.task import Role, StepOutput


@dataclass
class DistillConfig:
    """The `task:` section for `name: distill`."""

    temperature: float = 2.0  # softens both distributions; the KL term is scaled by T^2
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha goes to the data's labels
    epochs: int = 1  # passes over each batch
    minibatches: int = 1  # optimizer updates per pass, on shuffled groups of the batch's rows

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.epochs < 1 or self.minibatches < 1:
            raise ValueError(f"epochs and minibatches must be >= 1, got {self.epochs} and {self.minibatches}")


class DistillTask:
    """Student and teacher by name; {"input_ids", "labels"} batches as the LM datasets yield them."""

    model_roles = {"student": Role.trained, "teacher": Role.frozen}
    item_unit = "tokens"
    val_perplexity = True  # of the student on the data's labels

    def __init__(self, config: DistillConfig | None = None, loss: Any = None) -> None:
        if loss is not None:
            raise RecipeError("task 'distill' computes its own loss; remove the recipe's 'loss:' section")
        self.config = config or DistillConfig()

    def loss(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor]) -> StepOutput:
        input_ids, labels = batch["input_ids"], batch["labels"]  # [B, S], [B, S]
        with torch.no_grad():
            teacher_logits = models["teacher"](input_ids)  # [B, S, V]
        student_logits = models["student"](input_ids)  # [B, S, V]
        if teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise DataError(f"the teacher predicts {teacher_logits.shape[-1]} tokens but the student "
                            f"{student_logits.shape[-1]}: distillation needs one vocabulary")
        keep = labels != -100  # [B, S]
        student = student_logits[keep].float()  # [N, V]
        teacher = teacher_logits[keep].float()  # [N, V]
        items = int(keep.sum().item())
        if items == 0:
            return StepOutput(loss=student_logits.sum() * 0.0, items=0)
        temperature = self.config.temperature
        kl = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                      log_target=True, reduction="batchmean") * temperature**2
        cross_entropy = F.cross_entropy(student, labels[keep])
        loss = self.config.alpha * kl + (1.0 - self.config.alpha) * cross_entropy
        return StepOutput(loss=loss, items=items, sequence_length=input_ids.shape[1],
                          metrics={"kl": kl.detach(), "ce": cross_entropy.detach()})

    def train_step(self, context) -> None:
        """toolkit.capabilities.CustomLoop: `epochs` x `minibatches` updates on one batch."""
        batch = context.next_batch()
        rows = batch["input_ids"].shape[0]
        if rows < self.config.minibatches:
            raise DataError(f"task.minibatches={self.config.minibatches} is more than the {rows} rows of a batch")
        for _ in range(self.config.epochs):
            order = torch.randperm(rows)  # [B]: a fresh shuffle each pass, from torch's RNG
            for group in order.chunk(self.config.minibatches):
                minibatch = {key: value[group.to(value.device)] for key, value in batch.items()}
                for _ in context.micro_steps(1):
                    with context.autocast():
                        output = self.loss(context.models, minibatch)
                    context.backward(output)
                context.optimizer_step()

    def training_step(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor]) -> StepOutput:
        return self.loss(models, batch)

    def validation_step(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor]) -> StepOutput:
        """The student's cross-entropy on the data is the validation loss (so val_ppl is its
        perplexity); the distillation terms are metrics."""
        output = self.loss(models, batch)
        if output.items:
            output.metrics["distill_loss"] = output.loss.detach()
            output.loss = output.metrics["ce"]
        return output


def build_distill(config: DistillConfig | None, loss: Any) -> DistillTask:
    return DistillTask(config, loss)
