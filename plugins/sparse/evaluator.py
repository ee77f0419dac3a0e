"""The `relu_stats` evaluator: FFN sparsity of any OpenELM run, its validation loss, and predictors.

    toolkit-eval relu_stats --model runs/relufy-tiny --output eval/relu predictor_rank=32

On the first `sequences` validation sequences of the run's own data (its recipe's data section):
validation loss, and per layer activation sparsity, aggregated sparsity over each window of k
tokens, FFN FLOPs per token dense and sparse (stats.py). With `predictor_rank` > 0 it also fits
one low-rank predictor per layer on `predictor_sequences` training sequences and reports, on the
validation sequences, each layer's precision and recall, the share of neurons predicted active,
and the validation loss of sparse decoding driven by the predictors (the SparseOpenELM path),
beside the dense loss: its relative change is the quality cost of predicting. `save_predictors=PATH`
writes the fitted predictors (predictor_file.py) for `--decoder sparse` to decode with.

With `toolkit-eval --decoder sparse --decoder-options '{...}'` the statistics are still those of
the model, and `decoding` reports the validation loss of that decoding path (the one
`toolkit-generate --decoder sparse` times; token by token when its FFN weights come from a
bundle) with its figures; a predictor file it decodes with is scored like fitted predictors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from plugins.lm.loading import run_sequences
from plugins.openelm.model import OpenELM
from plugins.sparse.decoder import SparseDecoder
from plugins.sparse.predictor import PredictedPattern, PredictorConfig, precision_recall, train_predictor
from plugins.sparse.predictor_file import save_predictors
from plugins.sparse.sparse_ffn import SparseOpenELM, ffn_released
from plugins.sparse.stats import layer_statistics, record_ffn, summarize, validation_loss
from toolkit.errors import ToolkitError


@dataclass
class ReluStatsConfig:
    """`toolkit-eval relu_stats` options."""

    sequences: int = 8  # validation sequences (toolkit-eval --limit overrides)
    windows: list[int] = field(default_factory=lambda: [1, 4, 16, 64])  # k of aggregated sparsity
    predictor_rank: int = 0  # > 0: fit a rank-r predictor per layer and report it
    predictor_threshold: float = 0.3
    predictor_steps: int = 300
    predictor_sequences: int = 16  # training sequences whose activations the predictors fit
    save_predictors: str = ""  # write the fitted predictors to this file (needs predictor_rank > 0)

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.predictor_sequences < 1:
            raise ValueError("sequences and predictor_sequences must be >= 1")
        if not self.windows or any(k < 1 for k in self.windows):
            raise ValueError(f"windows must be a non-empty list of sizes >= 1, got {self.windows}")
        if self.predictor_rank < 0:
            raise ValueError(f"predictor_rank must be >= 0, got {self.predictor_rank}")
        if self.save_predictors and self.predictor_rank == 0:
            raise ValueError("save_predictors needs predictor_rank > 0 (predictors to fit and save)")
        PredictorConfig(max(1, self.predictor_rank), self.predictor_threshold, self.predictor_steps)  # checks


def fit_predictors(model: OpenELM, input_ids: torch.Tensor, config: PredictorConfig) -> list:
    """One predictor per layer, fitted to the model's own activations on input_ids [N, S]."""
    inputs, activations, _ = record_ffn(model, input_ids)
    return [train_predictor(hidden.flatten(0, 1), (activation != 0).flatten(0, 1), config)
            for hidden, activation in zip(inputs, activations)]


def predictor_report(model: OpenELM, predictors: list, inputs: list[torch.Tensor], activations: list[torch.Tensor],
                     input_ids: torch.Tensor, labels: torch.Tensor, dense_loss: float) -> dict[str, Any]:
    """Precision, recall and predicted-active share per layer; the loss of predictor-driven sparse decoding."""
    layers = []
    for index, (predictor, hidden, activation) in enumerate(zip(predictors, inputs, activations)):
        predicted = predictor.predict(hidden)  # [N, S, F]
        precision, recall = precision_recall(predicted, activation != 0)
        layers.append({"layer": index, "precision": precision, "recall": recall,
                       "predicted_active_fraction": predicted.float().mean().item()})
    sparse_loss = validation_loss(SparseOpenELM(model, PredictedPattern(predictors))(input_ids), labels)
    return {"layers": layers, "sparse_val_loss": sparse_loss,
            "sparse_val_loss_relative_change": (sparse_loss - dense_loss) / dense_loss}


def decoding_metrics(decoder: SparseDecoder, input_ids: torch.Tensor, labels: torch.Tensor,
                     dense_loss: float) -> dict[str, Any]:
    """The validation loss of the decoder's path beside the dense one, and the path's figures."""
    loss = validation_loss(decoder(input_ids), labels)
    return {"path": decoder.description, "scored": "token by token" if decoder.token_by_token else "whole sequences",
            "val_loss": loss, "val_loss_relative_change": (loss - dense_loss) / dense_loss, **decoder.figures()}


class ReluStatsEvaluator:
    def __init__(self, config: ReluStatsConfig | None = None) -> None:
        self.config = config or ReluStatsConfig()

    def load_model(self, spec: str, device: str, **options: str):
        from toolkit.checkpoint import load_model

        target = Path(self.config.save_predictors) if self.config.save_predictors else None
        if target is not None and (target.is_dir() or not target.parent.is_dir()):
            raise ToolkitError(f"save_predictors={target}: {'is a directory' if target.is_dir() else 'no such directory'}")
        loaded = load_model(spec, device=device)
        if not isinstance(loaded.model, OpenELM):
            raise ToolkitError(f"{spec}: relu_stats needs an OpenELM model, this is {type(loaded.model).__name__}")
        loaded.identity = str(loaded.checkpoint_dir)
        return loaded

    def evaluate(self, loaded, context) -> dict[str, Any]:
        config = self.config
        decoder = loaded.model if isinstance(loaded.model, SparseDecoder) else None  # toolkit-eval --decoder sparse
        model = decoder.model if decoder is not None else loaded.model
        if ffn_released(model):
            raise ToolkitError("relu_stats records the dense FFN's activations, and --decoder-options released the "
                               "model's FFN weights for the bundle", hint="add keep_model_ffn: true")
        input_ids, labels = run_sequences(loaded.recipe, "val", context.limit or config.sequences)
        inputs, activations, logits = record_ffn(model, input_ids)
        dense_loss = validation_loss(logits, labels)
        layers = layer_statistics(model, inputs, activations, config.windows)
        metrics: dict[str, Any] = {
            "ffn_activation": model.config.ffn_activation, "activation_shift": model.config.activation_shift,
            "relu_after_norm": model.config.relu_after_norm, "sequences": int(input_ids.shape[0]),
            "val_loss": dense_loss, **summarize(model, layers, input_ids.shape[1]), "layers": layers,
        }
        if config.predictor_rank > 0:
            predictor_config = PredictorConfig(config.predictor_rank, config.predictor_threshold, config.predictor_steps)
            train_ids, _ = run_sequences(loaded.recipe, "train", config.predictor_sequences)
            predictors = fit_predictors(model, train_ids, predictor_config)
            metrics["predictor"] = {"rank": config.predictor_rank, "threshold": config.predictor_threshold,
                                    **predictor_report(model, predictors, inputs, activations, input_ids, labels,
                                                       dense_loss)}
            if config.save_predictors:
                save_predictors(predictors, model, getattr(loaded, "identity", ""), Path(config.save_predictors))
                metrics["predictor"]["saved_to"] = config.save_predictors
        elif decoder is not None and isinstance(decoder.source, PredictedPattern):
            predictors = decoder.source.predictors  # the predictor file the decoder reads
            metrics["predictor"] = {"rank": predictors[0].down.weight.shape[0], "threshold": predictors[0].threshold,
                                    **predictor_report(model, predictors, inputs, activations, input_ids, labels,
                                                       dense_loss)}
        if decoder is not None:
            metrics["decoding"] = decoding_metrics(decoder, input_ids, labels, dense_loss)
        return metrics


def build_relu_stats(config: ReluStatsConfig | None) -> ReluStatsEvaluator:
    return ReluStatsEvaluator(config)
