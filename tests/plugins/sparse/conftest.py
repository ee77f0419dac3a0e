"""Fixtures of the sparse tests: a relufied tiny OpenELM run, trained in this process in seconds."""

from __future__ import annotations

import pytest
import torch

# openelm/tiny.yaml shrunk to seconds: 2 layers, width 32, 16-token windows, 2 steps, relu in the FFN.
TINY_RELU_RUN = ["model.ffn_activation=relu", "model.num_layers=2", "model.model_dim=32", "model.head_dim=8",
                 "model.ffn_dim_divisor=16", "data.seq_len=16", "data.batch_size=4", "trainer.max_steps=2",
                 "trainer.save_every=2", "trainer.eval_every=0", "trainer.keep_last=1", "trainer.log_every=1",
                 "trainer.precision=fp32", "schedule.warmup_steps=1", "trainer.peak_flops=1e12",
                 "trainer.progress=false", "trainer.threads=1"]


@pytest.fixture(scope="session")
def relu_run(tmp_path_factory):
    """A 2-step run of openelm/tiny.yaml with ffn_activation=relu (its step-000002 saved)."""
    from helpers import train_in_process

    return train_in_process("openelm/tiny.yaml", TINY_RELU_RUN, tmp_path_factory.mktemp("relu-run") / "run")


@pytest.fixture(scope="session")
def sparse_files(relu_run, tmp_path_factory):
    """The run's FFN bundle, a predictor file fitted to it, and 3/4 of its FFN bytes (a DRAM cap)."""
    from plugins.lm.loading import load_language_model
    from plugins.sparse import write_bundle
    from plugins.sparse.evaluator import fit_predictors
    from plugins.sparse.predictor import PredictorConfig
    from plugins.sparse.predictor_file import save_predictors
    from toolkit.cli.common import run_cli

    folder = tmp_path_factory.mktemp("sparse-files")
    assert run_cli(write_bundle.run, [str(relu_run), str(folder / "ffn.bundle")]) == 0
    language_model = load_language_model(str(relu_run), "cpu")
    model = language_model.model
    # Text in the style the run trained on, so the predictors fit the activations real input gives.
    text = ("Good morrow, friend. What news from the court? The king is gone to hunt, and all his lords "
            "ride with him through the forest, while the queen keeps her chamber and will see no one. "
            "Then let us walk a while beside the river, and speak of other things until the evening.")
    tokens = language_model.tokenizer.encode(text)
    ids = torch.tensor((tokens * (64 // len(tokens) + 1))[:64]).view(4, 16)  # [4, 16]
    predictors = fit_predictors(model, ids, PredictorConfig(rank=4, steps=20))
    save_predictors(predictors, model, str(relu_run), folder / "predictors.safetensors")
    ffn_bytes = sum(layer.ffn.proj_1.weight.numel() + layer.ffn.proj_2.weight.numel() for layer in model.layers) * 4
    return folder / "ffn.bundle", folder / "predictors.safetensors", ffn_bytes * 3 // 4
