"""duo/routers.yaml: learned routers trained on a frozen Duo model from a random-routing run.

Every tensor but the router's comes from the source run, loaded strictly and left untouched; the
router starts fresh and is all the optimizer holds; a source that does not fit is one line.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from plugins.duo.model import DuoConfig, DuoOpenELM
from toolkit.cli import train as train_cli
from toolkit.cli.common import run_cli

from duo_models import TINY, tiny_overrides, train_tiny_run
from helpers import assert_error_output, assert_unchanged, snapshot


def test_routers_train_on_the_frozen_source_model(tiny_run, tmp_path):
    run = train_tiny_run(tmp_path / "routers", f"models.duo.source={tiny_run}", recipe_name="duo/routers.yaml",
                         model_section="models.duo")
    source = load_file(tiny_run / "step-000002" / "model.safetensors")  # a random router has no weights
    trained = load_file(run / "step-000002" / "model-duo.safetensors")
    assert sorted(key for key in trained if not key.startswith("router.")) == sorted(source)
    assert all(torch.equal(trained[key], source[key]) for key in source)  # loaded, then frozen
    router = sorted(key for key in trained if key.startswith("router."))
    assert router == ["router.layers.0.weight", "router.layers.1.weight"]
    optimizer = torch.load(run / "step-000002" / "optimizer.pt", weights_only=True)
    names = [name for group in optimizer["param_groups"] for name in group["params"]]
    assert sorted(str(name).removeprefix("duo.") for name in names) == router, names
    assert all(state["exp_avg"].abs().sum() > 0 for state in optimizer["state"].values())  # the routers learned


@pytest.mark.parametrize("overrides, fragments", [
    (["models.duo.small_ffn_ratio=2"], ["model.safetensors", "small_ffn", "has shape"]),
    (["models.duo.fresh_router=false"], ["weights do not match the model", "2 missing", "router.layers.0.weight"]),
])
def test_a_source_or_router_that_does_not_fit_is_one_clear_line(tiny_run, tmp_path, capsys, overrides, fragments):
    before = snapshot(tmp_path, tiny_run)
    code = run_cli(train_cli.main_with_arguments,
                   ["duo/routers.yaml", *tiny_overrides("models.duo"), f"models.duo.source={tiny_run}", *overrides,
                    f"trainer.out_dir={tmp_path / 'run'}"])
    assert_error_output(code, capsys.readouterr().err, *fragments)
    assert_unchanged(before, tmp_path, tiny_run)


def test_train_only_router_needs_a_router_with_parameters():
    with pytest.raises(ValueError, match="train_only_router: the fixed router has no parameters to train"):
        DuoConfig(**TINY, router="fixed", router_options={"pattern": ["big"] * 3}, train_only_router=True)
    frozen = DuoOpenELM(DuoConfig(**TINY, router="learned", train_only_router=True))
    assert [name for name, p in frozen.named_parameters() if p.requires_grad] == [
        f"router.layers.{layer}.weight" for layer in range(3)]
