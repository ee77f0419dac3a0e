"""Predictor files: exact round trip, the header, and one clear line for anything that does not fit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from plugins.sparse.evaluator import fit_predictors
from plugins.sparse.predictor import PredictorConfig
from plugins.sparse.predictor_file import (PredictorFileError, ffn_fingerprint, load_predictors, read_predictor_file,
                                           save_predictors)

from sparse_models import TINY, prompt, tiny_openelm


@pytest.fixture(scope="module")
def fitted():
    model = tiny_openelm(ffn_activation="relu")
    return model, fit_predictors(model, prompt(16, batch=2, seed=5), PredictorConfig(rank=8, steps=10))


def test_predictors_round_trip_exactly_with_their_header(fitted, tmp_path):
    model, predictors = fitted
    path = tmp_path / "predictors.safetensors"
    save_predictors(predictors, model, "runs/relufy-tiny/step-000100", path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictors.safetensors"]  # no temporary left over
    with safe_open(str(path), framework="pt") as handle:  # plain safetensors: readable without the toolkit
        metadata = handle.metadata()
    header = json.loads(metadata["header"])
    ffn_dims = [layer.ffn.proj_2.weight.shape[1] for layer in model.layers]
    assert metadata["format"] == "toolkit-ffn-predictors" and metadata["version"] == "1"
    assert header == {"rank": 8, "threshold": 0.3, "num_layers": TINY["num_layers"], "model_dim": TINY["model_dim"],
                      "ffn_dims": ffn_dims, "model_identity": "runs/relufy-tiny/step-000100",
                      "ffn_sha256": ffn_fingerprint(model)}
    loaded = load_predictors(path, model)
    hidden = torch.randn(2, 5, TINY["model_dim"], generator=torch.Generator().manual_seed(0))
    for original, copy in zip(predictors, loaded, strict=True):
        for (name, value), (copy_name, copy_value) in zip(original.state_dict().items(), copy.state_dict().items()):
            assert name == copy_name and torch.equal(value, copy_value)
        assert torch.equal(original.predict(hidden), copy.predict(hidden))
    assert all(predictor.threshold == 0.3 for predictor in loaded)
    assert all(predictor.threshold == 0.6 for predictor in load_predictors(path, model, threshold=0.6))


def test_predictors_for_another_shape_are_refused_naming_both(fitted, tmp_path):
    model, predictors = fitted
    path = tmp_path / "p.safetensors"
    save_predictors(predictors, model, "the 3-layer run", path)
    from plugins.openelm.config import OpenELMConfig
    from plugins.openelm.model import OpenELM

    other = OpenELM(OpenELMConfig(**{**TINY, "num_layers": 2}, ffn_activation="relu"))
    with pytest.raises(PredictorFileError, match=r"p.safetensors: predictors for a model of 3 layers, width 64, "
                                                 r"FFN widths \[.*\]; this model has 2 layers") as caught:
        load_predictors(path, other)
    assert caught.value.hint == "they were trained for the 3-layer run"


def test_same_shape_other_weights_loads_with_a_warning(fitted, tmp_path, capsys):
    model, predictors = fitted
    path = tmp_path / "p.safetensors"
    save_predictors(predictors, model, "run-a", path)
    load_predictors(path, model)
    assert capsys.readouterr().err == ""
    load_predictors(path, tiny_openelm(seed=3, ffn_activation="relu"))
    assert capsys.readouterr().err.startswith(f"warning: {path}: the predictors were trained on other weights "
                                              "of this shape (run-a)")


def test_damaged_or_foreign_files_are_one_clear_error(fitted, tmp_path):
    model, predictors = fitted
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(PredictorFileError, match="garbage.safetensors: not a readable safetensors file"):
        read_predictor_file(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(PredictorFileError, match="not a predictor file \\(its format is 'pt'"):
        read_predictor_file(foreign)
    with pytest.raises(PredictorFileError, match="missing.safetensors: no such predictor file"):
        read_predictor_file(tmp_path / "missing.safetensors")
    good = tmp_path / "good.safetensors"
    save_predictors(predictors, model, "x", good)
    with safe_open(str(good), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    del tensors["layers.1.up.bias"]
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=metadata)
    with pytest.raises(PredictorFileError, match=r"tensor layers.1.up.bias is missing, the header says \(\d+,\)"):
        read_predictor_file(tmp_path / "short.safetensors")
    save_file({}, str(tmp_path / "bad-header.safetensors"), metadata={**metadata, "header": "{"})
    with pytest.raises(PredictorFileError, match="corrupt predictor header"):
        read_predictor_file(tmp_path / "bad-header.safetensors")
