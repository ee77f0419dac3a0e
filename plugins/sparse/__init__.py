"""The sparse plugin: relufied OpenELMs (ReLU Strikes Back) decoded computing only active FFN neurons.

Registers
    evaluator `relu_stats`   per-layer activation sparsity, aggregated sparsity over windows of k
                             tokens, FFN FLOPs saved, validation loss, and optionally low-rank
                             activation predictors with their precision and recall (evaluator.py)
    decoder `sparse`         `toolkit-generate` / `toolkit-eval --decoder sparse`: decode through the
                             sparse path (true pattern, a predictor file, or all), FFN weights
                             in DRAM or from a bundle under a DRAM cap, with one line of figures
                             (decoder.py; predictor files: predictor_file.py)
    recipes under `sparse/`  `sparse/relufy_tiny.yaml`: a trained `openelm/tiny.yaml` run
                             fine-tuned with ReLU in its FFN

and provides the sparse decoding pieces: `SparseOpenELM` / `SparseFFN` (sparse_ffn.py), the
active-set sources (true pattern, all-active, `PredictedPattern`), and the `RowProvider`
interface for where a neuron's weights come from (provider.py; `DramRowProvider` in memory).
One token in DRAM runs the fused kernel of fused_ffn.py where numba is installed
(`FusedSparseFFN`, and `FusedPredictedPattern` for the predictors' ids).
The model option itself (`ffn_activation`, `activation_shift`, `relu_after_norm`) is OpenELM's.

FFN weights served from disk (row-column bundles, a DRAM neuron cache, a cost model) are the
modules bundle.py, neuron_cache.py, naive_loader.py, cost_model.py, fetch_stats.py and
activation_patterns.py; their NeuronCache and NaiveNeuronLoader are RowProviders too.
`python -m plugins.sparse.write_bundle RUN PATH` writes a run's bundle (write_bundle.py).
"""

from __future__ import annotations

from pathlib import Path

from plugins.sparse.decoder import SparseDecodingConfig, build_sparse_decoder
from plugins.sparse.evaluator import ReluStatsConfig, build_relu_stats
from plugins.sparse.provider import DramRowProvider, RowProvider
from plugins.sparse.sparse_ffn import AllActive, SparseFFN, SparseOpenELM, TruePattern
from toolkit import hookimpl

__all__ = ["AllActive", "DramRowProvider", "RowProvider", "SparseFFN", "SparseOpenELM", "TruePattern"]

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data


@hookimpl
def register_evaluators(register):
    register("relu_stats", build_relu_stats, config=ReluStatsConfig)


@hookimpl
def register_decoders(register):
    register("sparse", build_sparse_decoder, config=SparseDecodingConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="sparse")
