"""transfer-vit: pretrained tower loading, Transfer Init row copies, the matching rule, linear probes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from plugins.optim import AdamWConfig, build_adamw
from plugins.transfer.model import TransferViTConfig, build_transfer_vit, cached_mapper
from plugins.transfer.task import ClassificationTask
from plugins.transfer.transfer_init import ClassMatch, apply_transfer_init, candidate_lemmas, match_classes
from tests.plugins.transfer.conftest import VOCABULARY
from toolkit.checkpoint import load_weights, resolve_checkpoint
from toolkit.errors import CheckpointError, DataError

FASHION_TO_ROW = {3: 1, 4: 2, 9: 3}  # dress -> dress.n.01, coat -> coat.n.01, ankle boot -> boot.n.01


@pytest.fixture(scope="module")
def mapper():
    return cached_mapper(TransferViTConfig().wordnet_dir)


def _build(run, seed=0, **options):
    torch.manual_seed(seed)
    return build_transfer_vit(TransferViTConfig(init_from=str(run), **options))


def test_candidates_try_the_whole_phrase_then_its_last_word():
    assert candidate_lemmas("ankle boot") == ["ankle_boot", "boot"]
    assert candidate_lemmas("T-shirt/top") == ["t_shirt", "shirt", "top"]
    assert candidate_lemmas("Coat") == ["coat"]


def test_matching_rule_on_wordnet(mapper):
    names = ["ankle boot", "T-shirt/top", "sneaker", "dress", "ice cream", "dresses"]
    vocabulary = {"boot.n.01": 0, "shirt.n.01": 1, "ice_cream.n.01": 2}
    matches = match_classes(names, mapper, vocabulary)
    assert [match.synset for match in matches] == ["boot.n.01", "shirt.n.01", None, "dress.n.01",
                                                    "ice_cream.n.01", "dress.n.01"]
    assert [match.vocabulary_row for match in matches] == [0, 1, None, None, 2, None]


def test_transfer_init_copies_exactly_the_matched_rows(pretrained_run):
    pretrained = load_weights(resolve_checkpoint(pretrained_run) / "model.safetensors")
    weight, bias = pretrained["heads.head.weight"], pretrained["heads.head.bias"]  # [5, 24], [5]
    transfer = _build(pretrained_run, head="transfer")
    random = _build(pretrained_run, head="random")
    new_weight, new_bias = transfer.heads.head.weight, transfer.heads.head.bias  # [10, 24], [10]
    assert new_weight.shape == (10, 24)
    for row in range(10):
        if row in FASHION_TO_ROW:
            assert torch.equal(new_weight[row], weight[FASHION_TO_ROW[row]])
            assert torch.equal(new_bias[row], bias[FASHION_TO_ROW[row]])
        else:  # the random head's weights from the same seed, on the pretrained bias scale
            assert torch.equal(new_weight[row], random.heads.head.weight[row])
            assert torch.allclose(new_bias[row], bias.mean())
            assert not any(torch.equal(new_weight[row], weight[v]) for v in range(len(VOCABULARY)))
    for row in FASHION_TO_ROW:  # the random head copied nothing
        assert not torch.equal(random.heads.head.weight[row], new_weight[row])
    backbone = {key: value for key, value in transfer.state_dict().items() if not key.startswith("heads.")}
    assert all(torch.equal(value, pretrained[key]) for key, value in backbone.items())
    report = transfer.transfer_report
    assert report["matched"] == 3 and [row["copied"] for row in report["rows"]].count(True) == 3
    json.dumps(report)  # JSON-able, for transfer_init.json


def test_with_no_match_the_head_stays_entirely_random():
    head = torch.nn.Linear(4, 2)
    before = [tensor.clone() for tensor in (head.weight, head.bias)]
    matches = [ClassMatch(0, "sneaker", None, None), ClassMatch(1, "coat", "coat.n.01", None)]
    apply_transfer_init(head, torch.randn(3, 4), torch.full((3,), -6.0), matches)  # [V, D], [V]
    assert torch.equal(head.weight, before[0]) and torch.equal(head.bias, before[1])


def test_linear_probe_trains_only_the_head(pretrained_run):
    model = _build(pretrained_run, freeze_backbone=True)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"heads.head.weight", "heads.head.bias"}
    optimizer = build_adamw(AdamWConfig(lr=0.1), model)
    optimized = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    assert optimized == {id(model.heads.head.weight), id(model.heads.head.bias)}
    before = {key: value.clone() for key, value in model.state_dict().items()}
    batch = {"images": torch.randn(4, 3, 16, 16), "targets": torch.tensor([0, 3, 4, 9])}
    ClassificationTask().training_step(model, batch).loss.backward()
    assert all(parameter.grad is None for name, parameter in model.named_parameters() if name not in trainable)
    optimizer.step()
    after = model.state_dict()
    changed = {key for key in after if not torch.equal(after[key], before[key])}
    assert changed == trainable


def test_fine_tuning_trains_everything(pretrained_run):
    model = _build(pretrained_run, head="random", freeze_backbone=False)
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_meta_device_builds_the_shape_without_weights(pretrained_run):
    with torch.device("meta"):
        model = _build(pretrained_run)
    assert model.heads.head.weight.shape == (10, 24) and model.heads.head.weight.is_meta
    assert model.transfer_report is None


def test_from_scratch_uses_the_config_shape():
    model = build_transfer_vit(TransferViTConfig(init_from="", image_size=16, patch_size=8, num_layers=1,
                                                 num_heads=2, hidden_dim=24, mlp_dim=48, class_names=["a", "b"]))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 2)


def test_head_and_vocabulary_sizes_must_agree(pretrained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pretrained_run, run)
    entries = json.loads((run / "synsets.json").read_text())
    (run / "synsets.json").write_text(json.dumps(entries[:4]))
    with pytest.raises(CheckpointError) as caught:
        _build(run)
    line = caught.value.one_line()
    assert "model.safetensors" in line and "synsets.json" in line and "5 rows" in line and "4 synsets" in line


def test_task_rejects_a_wrong_image_size(pretrained_run):
    model = _build(pretrained_run, head="random")
    with pytest.raises(DataError) as caught:
        ClassificationTask().validation_step(model, {"images": torch.randn(2, 3, 32, 32),
                                                     "targets": torch.tensor([0, 1])})
    assert "set data.image_size to 16" in caught.value.one_line()


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given: the task's metric is then known exactly."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images):  # [B, 3, H, W] -> [B, C]
        return self.logits


def test_classification_accuracy_is_exact_and_ignores_padding_rows():
    logits = torch.tensor([[3.0, 0.0, 0.0],  # predicts 0, target 0: right
                           [0.0, 2.0, 0.0],  # predicts 1, target 1: right
                           [1.0, 0.0, 0.5],  # predicts 0, target 2: wrong
                           [0.0, 0.0, 9.0],  # padding row: not counted
                           [0.0, 1.0, 4.0]])  # predicts 2, target 1: wrong
    targets = torch.tensor([0, 1, 2, -100, 1])
    output = ClassificationTask().validation_step(FixedLogits(logits), {"images": torch.zeros(5, 3, 4, 4),
                                                                        "targets": targets})
    assert output.items == 4
    assert float(output.metrics["accuracy"]) == 0.5
    expected_loss = torch.nn.functional.cross_entropy(logits[[0, 1, 2, 4]], targets[[0, 1, 2, 4]])
    torch.testing.assert_close(output.loss, expected_loss, atol=1e-6, rtol=1e-6)
