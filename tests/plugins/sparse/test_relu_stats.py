"""Sparsity statistics by hand, and the relu_stats evaluator against direct computation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from plugins.sparse import evaluator as relu_stats
from plugins.sparse.evaluator import ReluStatsConfig, ReluStatsEvaluator
from plugins.sparse.predictor import PredictedPattern
from plugins.sparse.sparse_ffn import SparseOpenELM
from plugins.sparse.stats import aggregated_sparsity, layer_statistics, record_ffn, validation_loss
from toolkit.cli.common import run_cli
from toolkit.cli.eval import main_with_arguments as eval_main

from helpers import assert_error_output
from sparse_models import TINY, prompt, tiny_openelm


def test_aggregated_sparsity_by_hand():
    # one sequence, 4 tokens, 3 neurons; neuron 2 is never used
    active = torch.tensor([[[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    assert aggregated_sparsity(active, 1) == pytest.approx(1 - 2 / 12)
    # windows ending at t = 1, 2, 3: used {0}, {1}, {1} -> 3 of 9 used
    assert aggregated_sparsity(active, 2) == pytest.approx(1 - 3 / 9)
    # windows (0..2), (1..3): used {0, 1}, {1} -> 3 of 6 used
    assert aggregated_sparsity(active, 3) == pytest.approx(1 - 3 / 6)
    assert aggregated_sparsity(active, 5) is None


def test_layer_statistics_by_hand():
    model = tiny_openelm(ffn_activation="relu")
    ffn_dims = [layer.widths.ffn_dim for layer in model.layers]
    activations = []
    for ffn_dim in ffn_dims:
        activation = torch.zeros(1, 2, ffn_dim)
        activation[0, 0, :4] = 1.0  # token 0 uses 4 neurons, token 1 uses 2 of them
        activation[0, 1, 2:4] = -0.5
        activations.append(activation)
    inputs = [torch.ones(1, 2, TINY["model_dim"])] * len(ffn_dims)
    rows = layer_statistics(model, inputs, activations, windows=[2])
    for row, ffn_dim in zip(rows, ffn_dims):
        assert row["activation_sparsity"] == pytest.approx(1 - 6 / (2 * ffn_dim))
        assert row["active_neurons_per_token"] == 3.0
        assert row["aggregated_sparsity"]["2"] == pytest.approx(1 - 4 / ffn_dim)
        assert row["ffn_flops_dense"] == 6 * TINY["model_dim"] * ffn_dim
        assert row["ffn_flops_sparse"] == 6 * TINY["model_dim"] * 3


def test_evaluator_matches_direct_measurement(monkeypatch, tmp_path):
    model = tiny_openelm(ffn_activation="relu")
    sequences = {"val": prompt(16, batch=2, seed=4), "train": prompt(16, batch=3, seed=5)}
    labels = torch.roll(sequences["val"], -1, dims=1)
    monkeypatch.setattr(relu_stats, "run_sequences",
                        lambda recipe, split, count: (sequences[split][:count], labels[:count]))
    config = ReluStatsConfig(sequences=2, windows=[1, 8], predictor_rank=8, predictor_steps=20, predictor_sequences=3)
    metrics = ReluStatsEvaluator(config).evaluate(SimpleNamespace(model=model, recipe={}),
                                                   SimpleNamespace(limit=None, output_dir=tmp_path))
    inputs, activations, logits = record_ffn(model, sequences["val"])
    assert metrics["val_loss"] == pytest.approx(validation_loss(logits, labels), rel=1e-6)
    for row, activation in zip(metrics["layers"], activations):
        zeros = (activation == 0).float().mean().item()
        assert row["activation_sparsity"] == pytest.approx(zeros) and 0.3 < zeros < 0.7
        assert row["aggregated_sparsity"]["1"] == pytest.approx(zeros)
        assert row["aggregated_sparsity"]["8"] < zeros  # a union over 8 tokens leaves fewer unused
    assert 0.3 < metrics["ffn_flops_saved_fraction"] < 0.7
    assert metrics["forward_flops_saved_fraction"] < metrics["ffn_flops_saved_fraction"]
    report = metrics["predictor"]
    assert len(report["layers"]) == TINY["num_layers"]
    assert all(0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 for row in report["layers"])
    assert report["sparse_val_loss"] != metrics["val_loss"]  # predicted sets drop or add some neurons


def test_predicted_sparse_loss_is_the_sparse_path():
    model = tiny_openelm(ffn_activation="relu")
    ids, labels = prompt(16, batch=2, seed=4), prompt(16, batch=2, seed=6)
    inputs, activations, logits = record_ffn(model, ids)
    predictors = relu_stats.fit_predictors(model, prompt(16, batch=3, seed=5),
                                           relu_stats.PredictorConfig(rank=8, steps=20))
    report = relu_stats.predictor_report(model, predictors, inputs, activations, ids, labels, 1.0)
    expected = validation_loss(SparseOpenELM(model, PredictedPattern(predictors))(ids), labels)
    assert report["sparse_val_loss"] == pytest.approx(expected, rel=1e-6)
    assert report["sparse_val_loss_relative_change"] == pytest.approx(expected - 1.0, rel=1e-6)


def test_bad_option_is_one_line_and_writes_nothing(tmp_path, capsys):
    output = tmp_path / "eval"
    code = run_cli(eval_main, ["relu_stats", "--model", str(tmp_path / "run"), "--output", str(output),
                               "predictor_threshold=2"])
    assert_error_output(code, capsys.readouterr().err, "relu_stats: predictor threshold must be in (0, 1), got 2.0")
    assert not output.exists()


def test_a_list_option_on_the_command_line_is_read_as_a_list(tmp_path, capsys):
    from toolkit.cli.eval import typed_options

    options = typed_options(ReluStatsConfig, {"windows": "[1, 8]", "predictor_rank": "16"})
    assert options == {"windows": [1, 8], "predictor_rank": "16"}  # other values stay text for the config
    output = tmp_path / "eval"
    code = run_cli(eval_main, ["relu_stats", "--model", str(tmp_path / "run"), "--output", str(output), "windows=3x"])
    assert_error_output(code, capsys.readouterr().err, "evaluator option 'windows=3x': windows takes a list",
                        "windows=[a, b, c]")
    assert not output.exists()
