"""The cross_entropy loss (fp32, z-loss, ignored labels) and the causal_lm task's step outputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.plugins import collect_registries, make_plugin_manager
from toolkit.task import StepOutput, Task

from plugins.lm.loss import CrossEntropyConfig, CrossEntropyLoss
from plugins.lm.task import CausalLMTask

VOCAB = 37


def random_batch(batch=3, length=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, VOCAB, generator=generator) * 3
    labels = torch.randint(0, VOCAB, (batch, length), generator=generator)
    return logits, labels


def test_equals_torch_cross_entropy_without_z_loss():
    logits, labels = random_batch()
    logits.requires_grad_(True)
    ours = CrossEntropyLoss()(logits, labels)
    reference = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))
    torch.testing.assert_close(ours, reference)
    (ours_grad,) = torch.autograd.grad(ours, logits)
    (reference_grad,) = torch.autograd.grad(F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1)), logits)
    torch.testing.assert_close(ours_grad, reference_grad)


def test_z_loss_adds_mean_squared_log_normalizer():
    logits, labels = random_batch()
    terms = CrossEntropyLoss(CrossEntropyConfig(z_loss=1e-2)).terms(logits, labels)
    expected_z = torch.logsumexp(logits, dim=-1).square().mean()
    torch.testing.assert_close(terms.z_loss, expected_z)
    expected_cross_entropy = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))
    torch.testing.assert_close(terms.total, expected_cross_entropy + 1e-2 * expected_z)


def test_ignored_labels_and_all_padding():
    logits, labels = random_batch()
    labels[0] = -100
    terms = CrossEntropyLoss().terms(logits, labels)
    torch.testing.assert_close(terms.total, F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1)))
    assert int(terms.tokens) == 10
    empty = CrossEntropyLoss(CrossEntropyConfig(z_loss=1.0)).terms(logits, torch.full_like(labels, -100))
    assert float(empty.total) == 0.0 and int(empty.tokens) == 0  # not NaN


def test_bf16_logits_are_reduced_in_fp32():
    logits, labels = random_batch()
    low_precision = logits.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CrossEntropyLoss()(low_precision, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(low_precision.float().reshape(-1, VOCAB), labels.reshape(-1)))


class TinyLM(nn.Module):
    """A bigram model: logits depend on the current token only."""

    def __init__(self, vocab=VOCAB):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, input_ids):  # [B, S] -> [B, S, V]
        return self.table(input_ids)

class Wrapped(nn.Module):  # stands in for DDP: the task only calls the model
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, input_ids):
        return self.module(input_ids)


def test_task_step_outputs():
    model = TinyLM()
    _, labels = random_batch(2, 6)
    batch = {"input_ids": labels.clone(), "labels": labels}
    task = CausalLMTask(None, CrossEntropyLoss(CrossEntropyConfig(z_loss=1e-4)))
    assert isinstance(task, Task) and task.item_unit == "tokens"
    output = task.training_step(Wrapped(model), batch)
    assert isinstance(output, StepOutput) and output.items == 12
    assert output.sequence_length == 6 and output.flops is None  # the engine counts FLOPs from the raw model
    assert set(output.metrics) == {"ce", "z_loss"} and output.loss.requires_grad
    output.loss.backward()
    # The gradient of cross-entropy + 1e-4 * mean(logsumexp^2), written out (labels are aligned
    # with input_ids: the data shifts them).
    reference = TinyLM()
    reference.load_state_dict(model.state_dict())
    logits = reference(labels).reshape(-1, reference.table.num_embeddings)  # [B*S, V]
    expected = F.cross_entropy(logits, labels.reshape(-1)) + 1e-4 * logits.logsumexp(-1).pow(2).mean()
    expected.backward()
    torch.testing.assert_close(model.table.weight.grad, reference.table.weight.grad, atol=1e-7, rtol=1e-5)
    assert model.table.weight.grad.abs().sum() > 0
    labels_with_padding = labels.clone()
    labels_with_padding[1] = -100
    val = task.validation_step(model, {"input_ids": labels, "labels": labels_with_padding})
    assert val.items == 6
    plain = CausalLMTask(None, None).training_step(model, batch)  # default loss; no z-loss metric
    assert set(plain.metrics) == {"ce"}
    assert math.isfinite(float(plain.loss.detach()))


def test_plugin_registers_its_components(monkeypatch):
    monkeypatch.setenv("TOOLKIT_PLUGINS", "lm")
    registries = collect_registries(*make_plugin_manager())
    assert "text_shards" in registries["datasets"]
    assert "cross_entropy" in registries["losses"]
    assert "causal_lm" in registries["tasks"]
    assert registries["losses"].get("cross_entropy").plugin == "lm"
