"""Trained activation predictors on disk: a safetensors file with a JSON header saying what they fit.

    toolkit-eval relu_stats --model runs/relufy-tiny predictor_rank=32 save_predictors=runs/relufy-tiny/predictors.safetensors

Tensors, per layer i: `layers.{i}.down.weight` [r, D], `layers.{i}.up.weight` [F_i, r],
`layers.{i}.up.bias` [F_i] (predictor.LowRankPredictor's parameters). The safetensors metadata holds
`format` ("toolkit-ffn-predictors"), `version` and `header`, a JSON object:

    rank, threshold, num_layers, model_dim, ffn_dims [F_0, ...]   the shape the predictors fit
    model_identity   what they were trained on (the checkpoint directory)
    ffn_sha256       sha256 of that model's fused gate/up weights, all layers in order

Loading checks the shapes against the model being decoded: predictors of another shape cannot
run at all, so that is one error line. Same shapes but other weights (the run trained further,
say) still run, so that is a warning. Nothing is unpickled; the file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_tensors

from plugins.openelm.model import OpenELM
from plugins.sparse.predictor import LowRankPredictor
from toolkit.errors import CheckpointError
from toolkit.files import atomic_write_bytes

FORMAT_NAME = "toolkit-ffn-predictors"
FORMAT_VERSION = 1


class PredictorFileError(CheckpointError):
    """A predictor file is missing, damaged, of another format or for another model shape."""


def model_shape(model: OpenELM) -> dict[str, Any]:
    """num_layers, model_dim and ffn_dims of the model's FFNs: what a predictor must match."""
    return {"num_layers": len(model.layers), "model_dim": model.config.model_dim,
            "ffn_dims": [layer.ffn.proj_2.weight.shape[1] for layer in model.layers]}


def ffn_fingerprint(model: OpenELM) -> str:
    """sha256 of every layer's fused gate/up weight bytes: which weights the predictors read."""
    digest = hashlib.sha256()
    for layer in model.layers:
        digest.update(layer.ffn.proj_1.weight.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_predictors(predictors: list[LowRankPredictor], model: OpenELM, identity: str, path: Path) -> dict[str, Any]:
    """Write `predictors` (one per layer of `model`) to `path` atomically; returns the header."""
    header = {"rank": predictors[0].down.weight.shape[0], "threshold": predictors[0].threshold,
              **model_shape(model), "model_identity": identity, "ffn_sha256": ffn_fingerprint(model)}
    tensors = {}
    for index, predictor in enumerate(predictors):
        tensors[f"layers.{index}.down.weight"] = predictor.down.weight.detach().float().contiguous()  # [r, D]
        tensors[f"layers.{index}.up.weight"] = predictor.up.weight.detach().float().contiguous()  # [F, r]
        tensors[f"layers.{index}.up.bias"] = predictor.up.bias.detach().float().contiguous()  # [F]
    metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "header": json.dumps(header, sort_keys=True)}
    atomic_write_bytes(Path(path), save_tensors(tensors, metadata=metadata))
    return header


def read_predictor_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, tensors) of a predictor file, its format checked (PredictorFileError naming `path`)."""
    path = Path(path)
    if not path.is_file():
        raise PredictorFileError(f"{path}: no such predictor file",
                                 hint="write one: toolkit-eval relu_stats --model RUN predictor_rank=32 "
                                      "save_predictors=PATH")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise PredictorFileError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from error
    if metadata.get("format") != FORMAT_NAME:
        raise PredictorFileError(f"{path}: not a predictor file (its format is {metadata.get('format')!r}, "
                                 f"expected {FORMAT_NAME!r})")
    if metadata.get("version") != str(FORMAT_VERSION):
        raise PredictorFileError(f"{path}: predictor file version {metadata.get('version')!r}; "
                                 f"this toolkit reads version {FORMAT_VERSION}")
    try:
        header = json.loads(metadata.get("header", ""))
        rank, num_layers = int(header["rank"]), int(header["num_layers"])
        ffn_dims, model_dim = [int(value) for value in header["ffn_dims"]], int(header["model_dim"])
        float(header["threshold"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise PredictorFileError(f"{path}: corrupt predictor header ({type(error).__name__})") from error
    if len(ffn_dims) != num_layers:
        raise PredictorFileError(f"{path}: corrupt predictor header ({len(ffn_dims)} ffn_dims for {num_layers} layers)")
    for index, ffn_dim in enumerate(ffn_dims):
        expected = {f"layers.{index}.down.weight": (rank, model_dim), f"layers.{index}.up.weight": (ffn_dim, rank),
                    f"layers.{index}.up.bias": (ffn_dim,)}
        for key, shape in expected.items():
            if key not in tensors or tuple(tensors[key].shape) != shape:
                found = tuple(tensors[key].shape) if key in tensors else "missing"
                raise PredictorFileError(f"{path}: tensor {key} is {found}, the header says {shape}")
    return header, tensors


def load_predictors(path: Path, model: OpenELM, threshold: float | None = None) -> list[LowRankPredictor]:
    """The predictors in `path`, checked against `model`'s shape; `threshold` overrides the file's."""
    header, tensors = read_predictor_file(path)
    expected = model_shape(model)
    found = {key: header[key] for key in expected}
    if found != expected:
        raise PredictorFileError(
            f"{path}: predictors for a model of {found['num_layers']} layers, width {found['model_dim']}, FFN widths "
            f"{found['ffn_dims']}; this model has {expected['num_layers']} layers, width {expected['model_dim']}, "
            f"FFN widths {expected['ffn_dims']}",
            hint=f"they were trained for {header.get('model_identity') or 'another model'}")
    if header.get("ffn_sha256") != ffn_fingerprint(model):
        print(f"warning: {path}: the predictors were trained on other weights of this shape "
              f"({header.get('model_identity') or 'unnamed'}); their recall may be lower", file=sys.stderr)
    chosen = float(header["threshold"]) if threshold is None else threshold
    predictors = []
    for index, ffn_dim in enumerate(expected["ffn_dims"]):
        predictor = LowRankPredictor(expected["model_dim"], ffn_dim, int(header["rank"]), chosen)
        predictor.down.weight.data.copy_(tensors[f"layers.{index}.down.weight"])
        predictor.up.weight.data.copy_(tensors[f"layers.{index}.up.weight"])
        predictor.up.bias.data.copy_(tensors[f"layers.{index}.up.bias"])
        weight = model.layers[index].ffn.proj_1.weight  # the FFN input h has its device and dtype
        predictors.append(predictor.eval().to(device=weight.device, dtype=weight.dtype))
    return predictors
