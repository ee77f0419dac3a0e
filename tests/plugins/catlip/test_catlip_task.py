import torch
from torch import nn

import plugins.catlip as catlip
from plugins.catlip.task import MultiLabelClassificationTask


def test_task_step_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    batch = {"images": torch.randn(4, 3, 8, 8),
             "labels": torch.tensor([[1, 0, 0, 1, 0], [0] * 5, [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]]).float()}
    task = MultiLabelClassificationTask()
    assert task.item_unit == "images"
    out = task.training_step(model, batch)
    assert out.items == 4 and out.loss.ndim == 0
    assert abs(float(out.metrics["mean_positives"]) - 1.5) < 1e-6
    assert abs(float(out.metrics["empty_label_fraction"]) - 0.25) < 1e-6
    out.loss.backward()
    assert task.validation_step(model, batch).items == 4


def test_plugin_registers_loss_and_task():
    names = {}
    catlip.register_losses(lambda name, factory, config=None: names.setdefault(name, factory))
    catlip.register_tasks(lambda name, factory, config=None: names.setdefault(name, factory))
    catlip.register_models(lambda name, factory, config=None: names.setdefault(name, factory))
    assert set(names) == {"catlip_bce", "multilabel_classification", "catlip-vit-tiny", "catlip-vit-b16",
                          "catlip-vit-l16", "catlip-vit-h14"}
