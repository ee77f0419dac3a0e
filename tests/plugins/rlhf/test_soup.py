"""toolkit-soup: a soup of identical checkpoints is that checkpoint exactly, a soup is an ordinary
run directory that the loaders and `source:` read, mismatched runs and bad weights are one line
with nothing written, and the alpha sweep's endpoints are the runs' own validation losses."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import TINY, tiny_openelm, write_run
from helpers import assert_one_line_error, run_command
from plugins.lm.loading import load_language_model
from plugins.openelm import OpenELMConfig
from plugins.rlhf import soup_cli
from plugins.rlhf.soup import average, read_ingredient
from plugins.rlhf.sweep import Scorer, alpha_sweep
from toolkit.checkpoint import load_model, load_weights
from toolkit.cli.common import run_cli


def soup(capsys, *arguments: str) -> tuple[int, list[str]]:
    code = run_cli(soup_cli.run, list(arguments))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("copies", [2, 3])
def test_a_soup_of_identical_checkpoints_is_that_checkpoint(sft_run, tmp_path, capsys, copies):
    out = tmp_path / "soup"
    code, errors = soup(capsys, *[str(sft_run)] * copies, "--out", str(out))
    assert code == 0 and errors == []
    expected = load_weights(sft_run / "step-000002" / "model-policy.safetensors")
    actual = load_weights(out / "step-000000" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    # An ordinary run directory: the lm loader (toolkit-generate, toolkit-eval) and load_model read it.
    loaded = load_language_model(str(out), "cpu")
    assert loaded.tokenizer.vocab_size == TINY["vocab_size"]
    assert (out / "tokenizer.model").read_bytes() == (sft_run / "tokenizer.model").read_bytes()
    assert type(load_model(out).model).__name__ == "OpenELM"
    assert json.loads((out / "soup.json").read_text())["ingredients"][0]["weight"] == pytest.approx(1 / copies)


def test_weights_mix_the_runs_and_tied_tensors_stay_tied(base_run, sft_run, tmp_path, capsys):
    out = tmp_path / "soup"
    code, errors = soup(capsys, str(base_run), str(sft_run), "--weights", "0.25,0.75", "--out", str(out))
    assert code == 0, errors
    base = load_weights(base_run / "step-000001" / "model.safetensors")
    tuned = load_weights(sft_run / "step-000002" / "model-policy.safetensors")
    mixed = load_weights(out / "step-000000" / "model.safetensors")
    for key in base:
        expected = (0.25 * base[key].double() + 0.75 * tuned[key].double()).float()
        assert torch.equal(mixed[key], expected), key
    state = {"a": torch.ones(2)}
    state["tied"] = state["a"]
    result = average([state, state], [0.5, 0.5])
    assert result["tied"] is result["a"]


def test_a_recipe_can_start_from_a_soup(base_run, sft_run, tmp_path, capsys):
    out = tmp_path / "soup"
    assert soup(capsys, str(base_run), str(sft_run), "--out", str(out))[0] == 0
    from toolkit.assembly import build_model
    from toolkit.recipe import ModelSpec

    model = build_model(ModelSpec("policy", None, source=str(out)), torch.device("cpu"))
    mixed = load_weights(out / "step-000000" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[key], mixed[key]) for key in mixed)


@pytest.fixture(scope="module")
def wider_run(tmp_path_factory, tokenizer_path):
    config = OpenELMConfig(**{**TINY, "model_dim": 48})
    model = type(tiny_openelm())(config)
    return write_run(tmp_path_factory.mktemp("wide") / "run", model,
                     {"model": {"name": "openelm", **dataclasses.asdict(config)}}, tokenizer_path)


@pytest.mark.parametrize(("extra", "fragments"), [
    ([], ["tensor 'layers.0.attn.out_proj.weight' is (32, 32) float32 in", "but (48, 32) float32 in", "wide"]),
    (["--weights", "0.5,0.6"], ["--weights must sum to 1", "sum 1.1"]),
    (["--weights", "0.5"], ["--weights gives 1 weights for 2 runs"]),
    (["--weights", "1.5,-0.5"], ["finite and non-negative"]),
])
def test_a_mismatched_soup_is_one_line_and_writes_nothing(sft_run, wider_run, tmp_path, capsys, extra, fragments):
    out = tmp_path / "soup"
    code, errors = soup(capsys, str(sft_run), str(wider_run), *extra, "--out", str(out))
    assert code == 2 and len(errors) == 1, errors
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    assert list(tmp_path.iterdir()) == []


def test_another_tokenizer_or_config_is_refused(base_run, sft_run, tmp_path, capsys, tokenizer_path):
    other = write_run(tmp_path / "other", tiny_openelm(3), {"model": {"name": "openelm", **TINY, "rope_theta": 500.0}},
                      tokenizer_path)
    code, errors = soup(capsys, str(base_run), str(other), "--out", str(tmp_path / "soup"))
    assert code == 2 and len(errors) == 1 and "model config differs" in errors[0] and "rope_theta" in errors[0]
    (other / "tokenizer.model").write_bytes(b"another vocabulary")
    (other / "recipe.yaml").write_text((base_run / "recipe.yaml").read_text())
    (other / "step-000001" / "recipe.yaml").write_text((base_run / "recipe.yaml").read_text())
    code, errors = soup(capsys, str(base_run), str(other), "--out", str(tmp_path / "soup"))
    assert code == 2 and len(errors) == 1 and "tokenizer.model differs" in errors[0], errors
    assert not (tmp_path / "soup").exists()


def test_the_sweep_endpoints_are_each_runs_validation_loss(base_run, sft_run, tmp_path, capsys):
    first, second = read_ingredient(sft_run), read_ingredient(base_run)
    points = alpha_sweep(first, second, [0.0, 0.5, 1.0], max_batches=1)
    scorer = Scorer(first, max_batches=1)
    for point, run in ((points[0], sft_run), (points[2], base_run)):
        assert point.val_loss == pytest.approx(scorer.loss(load_model(run).model)[0], rel=1e-6)
    assert points[0].val_loss < points[2].val_loss  # two SFT steps lowered the loss on the SFT data
    report = tmp_path / "sweep.json"
    assert run_cli(soup_cli.run, [str(sft_run), str(base_run), "--sweep", "--alphas", "0,1", "--batches", "1",
                                  "--report", str(report)]) == 0
    assert [p["val_loss"] for p in json.loads(report.read_text())] == pytest.approx(
        [points[0].val_loss, points[2].val_loss], rel=1e-6)


def test_the_installed_command_refuses_a_mismatched_soup(sft_run, wider_run, tmp_path):
    result = run_command(["toolkit-soup", str(sft_run), str(wider_run), "--out", str(tmp_path / "soup")])
    assert_one_line_error(result, "tensor 'layers.0.attn.out_proj.weight'", "(32, 32)", "(48, 32)")
    assert list(tmp_path.iterdir()) == []
