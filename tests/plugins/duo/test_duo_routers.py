"""Routers: the component kind, each router's behaviour, causality, and configs that do not fit."""

from __future__ import annotations

import json

import pytest
import torch

from plugins.duo.routers import BIG, SKIP, SMALL, LearnedRouter, make_router
from toolkit.checkpoint import load_model
from toolkit.cli import train as train_cli
from toolkit.cli.common import run_cli
from toolkit.cli.plugins import describe, main_with_arguments
from toolkit.errors import RecipeError, ToolkitError

from helpers import assert_error_output, assert_unchanged, snapshot
from duo_models import tiny_duo, train_tiny_run


def test_routers_are_a_listed_component_kind(capsys):
    duo = next(row for row in describe() if row["name"] == "duo")
    assert duo["registers"]["routers"] == ["fixed", "learned", "oracle", "random"]
    assert main_with_arguments(["--options", "router", "learned"]) == 0
    assert "target_big=0.25" in capsys.readouterr().out


def test_random_router_draws_from_the_default_generator_with_its_probabilities():
    router = make_router("random", {"big": [1.0, 0.2], "small": [0.0, 0.3], "skip": [0.0, 0.5]}, 2)
    hidden = torch.zeros(40, 500, 4)
    assert (router.route(0, hidden).choices == BIG).all()
    torch.manual_seed(7)
    choices = router.route(1, hidden).choices
    shares = [(choices == code).float().mean().item() for code in (BIG, SMALL, SKIP)]
    assert shares == pytest.approx([0.2, 0.3, 0.5], abs=0.01)
    torch.manual_seed(7)  # the engine's RNG state decides the draws: a resumed run repeats them
    assert torch.equal(router.route(1, hidden).choices, choices)


def test_learned_router_trains_straight_through_toward_its_budget(token_ids):
    duo = tiny_duo("learned", target_big=0.25, budget_weight=2.0).train()
    logits = duo(token_ids)
    router: LearnedRouter = duo.router
    probabilities = [torch.softmax(router.logits(i, duo.layers[i].ffn_norm(h)), -1)[..., BIG].mean()
                     for i, h in enumerate(_block_inputs(duo, token_ids))]
    budget = router.auxiliary_loss()
    expected = 2.0 * (torch.stack(probabilities).mean() - 0.25) ** 2
    torch.testing.assert_close(budget, expected, rtol=1e-5, atol=1e-7)
    assert router.auxiliary_loss() is None  # taken once per forward
    (logits.logsumexp(-1).mean() + budget).backward()
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 for layer in router.layers)


def _block_inputs(duo, token_ids):
    """Each block's input after attention (what its router sees, before the FFN norm)."""
    cos, sin = duo._rope(token_ids.shape[1])
    x, inputs = duo.token_embeddings(token_ids), []
    with torch.no_grad():
        for index, layer in enumerate(duo.layers):
            x = x + layer.attn(layer.attn_norm(x), cos, sin)
            inputs.append(x.clone())
            choices = duo.routing.choices[index]
            big, small = layer.ffn(layer.ffn_norm(x)), layer.small_ffn(layer.ffn_norm(x))
            x = x + torch.where((choices == BIG)[..., None], big,
                                torch.where((choices == SMALL)[..., None], small, torch.zeros_like(big)))
    return inputs


@pytest.mark.parametrize("estimator", ["straight_through", "gumbel"])
def test_learned_router_decides_the_same_when_decoding_as_in_a_full_forward(estimator):
    duo = tiny_duo("learned", estimator=estimator)
    with torch.no_grad():  # spread the logits so all three choices occur
        for layer in duo.router.layers:
            layer.weight.normal_(0, 1.0)
    token_ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    duo(token_ids)
    full = duo.last_choices()  # [L, B, S]
    assert len(full.unique()) == 3
    cache = duo.make_cache(2, 16)
    duo.forward_step(token_ids[:, :4], cache)
    steps = [duo.last_choices()]
    for position in range(4, 16):
        duo.forward_step(token_ids[:, position:position + 1], cache)
        steps.append(duo.last_choices())
    assert torch.equal(torch.cat(steps, dim=2), full)


def test_a_router_config_that_does_not_fit_is_one_clear_error():
    with pytest.raises(RecipeError, match="the pattern has 2 layers, but the model has 3"):
        make_router("fixed", {"pattern": ["big", "skip"]}, 3)
    with pytest.raises(RecipeError, match=r"target_big must be in \[0, 1\], got -0.5"):
        make_router("learned", {"target_big": -0.5}, 3)
    with pytest.raises(RecipeError, match="layer 1: big \\+ small \\+ skip = 0.9"):
        make_router("random", {"big": [0.5, 0.4, 0.5]}, 3)
    with pytest.raises(RecipeError, match="has no pattern for max_big=4"):
        make_router("oracle", {"patterns_file": _oracle_file(), "max_big": 4}, 3)
    with pytest.raises(ToolkitError, match="unknown router 'randm'"):
        make_router("randm", {}, 3)


def _oracle_file() -> str:
    import tempfile

    path = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    path.write('{"budgets": [{"max_big": 1, "best_pattern": ["small", "big", "skip"]}]}')
    path.close()
    return path.name


def test_toolkit_train_refuses_a_router_that_does_not_fit_and_writes_nothing(tmp_path, capsys):
    out_dir = tmp_path / "run"
    before = snapshot(tmp_path)
    code = run_cli(train_cli.main_with_arguments, ["duo/tiny.yaml", "model.router=learned",
                                                   "model.router_options={target_big: 1.5}", f"trainer.out_dir={out_dir}"])
    assert_error_output(code, capsys.readouterr().err, "model.router_options", "target_big must be in [0, 1], got 1.5")
    assert_unchanged(before, tmp_path)


def test_random_routes_repeat_after_the_engine_restores_its_rng_state(token_ids):
    from toolkit.engine import rng

    duo = tiny_duo("random").train()
    torch.manual_seed(11)
    duo(token_ids)
    saved = rng.capture()  # what a checkpoint stores
    duo(token_ids)
    expected = duo.last_choices()
    torch.manual_seed(99)  # a fresh process would be elsewhere...
    rng.restore(saved)  # ...until resume restores the state
    duo(token_ids)
    assert torch.equal(duo.last_choices(), expected)
    assert len(expected.unique()) == 3


def test_the_tiny_recipe_dry_runs_with_a_learned_router(tmp_path, capsys):
    code = run_cli(train_cli.main_with_arguments, ["duo/tiny.yaml", "--dry-run", "model.router=learned",
                                                   f"trainer.out_dir={tmp_path / 'run'}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "layer  5: query heads   8, kv heads  2, ffn dim  1024" in out and "small ffn dim 64" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("router", ["random", "learned"])
def test_seeded_draws_depend_on_the_sequence_not_on_its_batch_or_the_default_generator(router, token_ids):
    options = {"estimator": "gumbel"} if router == "learned" else {}
    duo = tiny_duo(router, **options).train()
    seeds = torch.tensor([7, 8])
    with duo.seeded(seeds):
        duo(token_ids)
    whole = duo.last_choices()  # [L, B, S]
    for row in range(2):
        torch.manual_seed(100 + row)  # the default generator decides nothing
        with duo.seeded(seeds[row:row + 1]):
            duo(token_ids[row:row + 1])
        assert torch.equal(duo.last_choices()[:, 0], whole[:, row])
    assert duo.router.sample_seeds is None  # only for the batch in flight
    with duo.seeded(torch.tensor([8, 7])):
        duo(token_ids)
    assert not torch.equal(duo.last_choices(), whole)  # the seed, not the row, decides


def test_the_fixed_router_and_its_pattern_are_chosen_on_the_command_line(tmp_path):
    """The override DUO.md shows: `model.router=fixed 'model.router_options={pattern: [...]}'`."""
    run = train_tiny_run(tmp_path / "run", "model.router=fixed", "model.router_options={pattern: [big, skip]}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["big_share"] for record in records if "loss" in record] == [0.5, 0.5]
    assert load_model(run).model.router.codes == [BIG, SKIP]
