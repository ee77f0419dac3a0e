"""OpenELM's relufication options: the FFN formula of each activation, stage 2, loading silu weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from plugins.openelm.config import OpenELMConfig
from plugins.sparse.stats import record_ffn

from sparse_models import TINY, prompt, tiny_openelm


def manual_intermediate(model, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """act(gate) * up written out from the config, to check the model's own against."""
    ffn = model.layers[layer].ffn
    gate, up = F.linear(hidden, ffn.proj_1.weight).chunk(2, dim=-1)
    config = model.config
    if config.ffn_activation == "silu":
        return F.silu(gate) * up
    return F.relu(gate - config.activation_shift) * up


@pytest.mark.parametrize("options", [{}, {"ffn_activation": "relu"},
                                     {"ffn_activation": "shifted_relu", "activation_shift": 0.05}])
def test_ffn_computes_its_activation(options):
    model = tiny_openelm(**options)
    hidden = torch.randn(2, 5, TINY["model_dim"], generator=torch.Generator().manual_seed(3))
    for inference in (False, True):
        got = model.layers[1].ffn.intermediate(hidden, inference=inference)
        torch.testing.assert_close(got, manual_intermediate(model, 1, hidden), rtol=1e-6, atol=1e-7)
    zeros = (model.layers[1].ffn.intermediate(hidden) == 0).float().mean().item()
    if options:
        assert zeros > 0.4  # random gates: about half at or below the shift
    else:
        assert zeros == 0.0  # silu is never exactly zero here


def test_default_is_silu_and_relu_loads_silu_weights():
    silu = tiny_openelm()
    assert silu.config.ffn_activation == "silu" and not silu.config.relu_after_norm
    relu = tiny_openelm(seed=5, ffn_activation="relu", relu_after_norm=True)
    relu.load_state_dict(silu.state_dict(), strict=True)  # no parameter is added or renamed
    ids = prompt()
    assert not torch.allclose(relu(ids), silu(ids), atol=1e-3)


@pytest.mark.parametrize("options", [{"ffn_activation": "relu"}, {"ffn_activation": "relu", "relu_after_norm": True},
                                     {"ffn_activation": "shifted_relu", "activation_shift": 0.1}, {}])
def test_cached_decoding_matches_the_training_forward(options):
    model = tiny_openelm(**options)
    ids = prompt(9)
    full = model(ids)  # [1, 9, V]
    cache = model.make_cache(1, 9)
    steps = [model.forward_step(ids[:, :5], cache)] + [model.forward_step(ids[:, i:i + 1], cache) for i in range(5, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


def test_stage_two_relus_the_norm_outputs():
    model = tiny_openelm(ffn_activation="relu", relu_after_norm=True)
    inputs, _, _ = record_ffn(model, prompt(9))
    for hidden in inputs:
        assert hidden.min() == 0.0 and (hidden == 0).float().mean() > 0.3
    plain_inputs, _, _ = record_ffn(tiny_openelm(ffn_activation="relu"), prompt(9))
    assert plain_inputs[0].min() < 0


@pytest.mark.parametrize("options, message", [
    ({"ffn_activation": "gelu"}, "ffn_activation must be one of silu, relu, shifted_relu"),
    ({"ffn_activation": "relu", "activation_shift": 0.5}, "activation_shift 0.5 needs ffn_activation: shifted_relu"),
])
def test_bad_activation_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        OpenELMConfig(**TINY, **options)


def test_rlhf_packed_forward_honours_stage_two():
    from plugins.rlhf.packed import packed_logits

    model = tiny_openelm(ffn_activation="relu", relu_after_norm=True)
    ids = prompt(9)
    one_document = torch.zeros_like(ids)
    torch.testing.assert_close(packed_logits(model, ids, one_document), model(ids), rtol=1e-4, atol=1e-4)


def test_duo_refuses_relu_options():
    from plugins.duo.model import DuoConfig

    with pytest.raises(ValueError, match="duo models are SwiGLU only"):
        DuoConfig(**TINY, ffn_activation="relu")


def test_hf_export_refuses_a_relufied_run(tmp_path, capsys):
    import yaml

    from plugins.openelm import export_cli
    from toolkit.cli.common import run_cli
    from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint

    from helpers import assert_error_output

    model = tiny_openelm(ffn_activation="relu")
    run = tmp_path / "run"
    run.mkdir()
    recipe = {"model": {"name": "openelm", **TINY, "ffn_activation": "relu"}, "data": {"name": "text_shards"}}
    save_checkpoint(run, CheckpointContent(step=1, model=model.state_dict(), optimizer={}, scheduler={},
                                           trainer_state={"step": 1}, recipe_yaml=yaml.safe_dump(recipe)), keep_last=1)
    code = run_cli(export_cli.run, ["--format", "hf", str(run), "--out", str(tmp_path / "hf")])
    assert_error_output(code, capsys.readouterr().err, "a relufied model (ffn_activation relu",
                        "has no Hugging Face OpenELM equivalent")
    assert not (tmp_path / "hf").exists()
