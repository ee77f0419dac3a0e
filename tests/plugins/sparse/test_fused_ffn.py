"""The fused sparse-FFN kernel (numba) computes one token's FFN over the chosen neurons: equal to
dense decoding to float tolerance with the true ReLU pattern, equal to the torch gather, and
wrong (beyond the tolerance) when a neuron is dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugins.sparse.decoder import SparseDecodingConfig, fused_kernel
from plugins.sparse.fused_ffn import FusedPredictedPattern, FusedSparseFFN, bundle_layer
from plugins.sparse.predictor import LowRankPredictor
from plugins.sparse.sparse_ffn import SparseOpenELM, TruePattern
from toolkit.errors import RecipeError

from sparse_models import TINY, prompt, tiny_openelm
from test_sparse_decoding import RELU_MODELS, DropStrongest, always_active_predictors, decode_logits

pytest.importorskip("numba")  # scripts/setup.sh installs it (the `sparse` extra)


def test_the_bundle_holds_gate_row_up_row_and_down_column_per_neuron():
    model = tiny_openelm(ffn_activation="relu")
    ffn = model.layers[1].ffn
    ffn_dim, width = ffn.proj_2.weight.shape[1], ffn.proj_2.weight.shape[0]
    bundle = torch.from_numpy(bundle_layer(ffn.proj_1.weight, ffn.proj_2.weight))
    assert bundle.shape == (ffn_dim, 3 * width)
    for neuron in (0, 7, ffn_dim - 1):
        assert torch.equal(bundle[neuron, :width], ffn.proj_1.weight[neuron])
        assert torch.equal(bundle[neuron, width:2 * width], ffn.proj_1.weight[ffn_dim + neuron])
        assert torch.equal(bundle[neuron, 2 * width:], ffn.proj_2.weight[:, neuron])
    kernel = FusedSparseFFN.from_model(model)
    provider = SparseOpenELM(model, TruePattern(model), fused=kernel).sparse_ffn.provider
    # the provider for several tokens at once reads the bundles' down columns, not a copy of them
    assert provider.down[1].data_ptr() == kernel.down_rows()[1].data_ptr()
    assert torch.equal(provider.down[1], ffn.proj_2.weight.t())


@pytest.mark.parametrize("options", RELU_MODELS)
def test_fused_true_pattern_equals_dense_and_the_torch_gather(options):
    model = tiny_openelm(**options)
    ids = prompt(12)
    dense = decode_logits(model, ids, prefill=5)
    gathered = decode_logits(SparseOpenELM(model, TruePattern(model)), ids, prefill=5)
    fused_model = SparseOpenELM(model, TruePattern(model), fused=FusedSparseFFN.from_model(model))
    fused = decode_logits(fused_model, ids, prefill=5)
    torch.testing.assert_close(fused, dense, rtol=0, atol=2e-5)
    torch.testing.assert_close(fused, gathered, rtol=0, atol=2e-5)
    total = sum(layer.widths.ffn_dim for layer in model.layers)
    assert 0 < fused_model.sparse_ffn.neurons_read < 8 * total  # the single-token steps skipped neurons


def test_the_fused_kernel_with_a_dropped_neuron_fails_the_tolerance():
    model = tiny_openelm(ffn_activation="relu")
    ids = prompt(12)
    dense = decode_logits(model, ids, prefill=5)
    wrong = decode_logits(SparseOpenELM(model, DropStrongest(model), fused=FusedSparseFFN.from_model(model)),
                          ids, prefill=5)
    assert not torch.allclose(wrong, dense, rtol=0, atol=2e-5)


def test_the_kernel_skips_neurons_below_the_shift():
    model = tiny_openelm(ffn_activation="shifted_relu", activation_shift=0.02)
    kernel = FusedSparseFFN.from_model(model)
    ffn = model.layers[0].ffn
    hidden = torch.randn(1, 1, ffn.proj_2.weight.shape[0], generator=torch.Generator().manual_seed(3))
    every = torch.arange(ffn.proj_2.weight.shape[1])
    torch.testing.assert_close(kernel(0, hidden, every), ffn.step(hidden), rtol=0, atol=1e-6)
    assert np.all(kernel.bundles[0] == bundle_layer(ffn.proj_1.weight, ffn.proj_2.weight))


def test_auto_takes_the_kernel_where_it_runs_and_fused_names_why_it_cannot():
    relu = tiny_openelm(ffn_activation="relu")
    assert isinstance(fused_kernel(SparseDecodingConfig(active="relu"), relu), FusedSparseFFN)
    assert fused_kernel(SparseDecodingConfig(active="relu", kernel="torch"), relu) is None
    assert fused_kernel(SparseDecodingConfig(active="all"), relu) is None
    half = tiny_openelm(ffn_activation="relu").to(torch.bfloat16)
    assert fused_kernel(SparseDecodingConfig(active="relu"), half) is None  # auto: the torch gather
    with pytest.raises(RecipeError, match="kernel: fused cannot run: it runs float32 relu FFNs on the CPU, "
                                          "and this model's are bfloat16 relu on cpu"):
        fused_kernel(SparseDecodingConfig(active="relu", kernel="fused"), half)


def test_fused_predictors_name_the_neurons_the_torch_predictors_mark():
    model = tiny_openelm(ffn_activation="relu")
    predictors = []
    generator = torch.Generator().manual_seed(5)
    for layer in model.layers:
        predictor = LowRankPredictor(TINY["model_dim"], layer.widths.ffn_dim, rank=4, threshold=0.3)
        with torch.no_grad():
            for parameter in predictor.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        predictors.append(predictor)
    fused = FusedPredictedPattern(predictors)
    for layer in range(len(predictors)):
        hidden = torch.randn(1, 1, TINY["model_dim"], generator=generator)
        logits = predictors[layer](hidden).view(-1)
        ids = fused.active_ids(layer, hidden)
        clear = (logits - predictors[layer].logit_threshold).abs() > 1e-4  # float order may flip a tie
        chosen = torch.zeros_like(clear)
        chosen[ids] = True
        assert torch.equal(chosen[clear], (logits > predictors[layer].logit_threshold)[clear])
        assert 0 < ids.numel() < logits.numel() and torch.equal(ids, ids.sort().values)


def test_every_neuron_predicted_active_through_the_fused_path_is_the_dense_ffn_exactly():
    model = tiny_openelm(ffn_activation="relu")
    ids = prompt(12)
    sparse = SparseOpenELM(model, FusedPredictedPattern(always_active_predictors(model)),
                           fused=FusedSparseFFN.from_model(model))
    assert torch.equal(decode_logits(sparse, ids, prefill=5), decode_logits(model, ids, prefill=5))
    assert sparse.sparse_ffn.neurons_read == 0 and sparse.sparse_ffn.dense_calls > 0


def cache_decoder(model, folder, source_class, cap_fraction: float):
    """A SparseOpenELM reading a bundle through a NeuronCache capped below the FFN, with the kernel on its slots."""
    from plugins.sparse.bundle import BundleReader, write_bundle
    from plugins.sparse.neuron_cache import NeuronCache

    write_bundle(model, folder / "ffn.bundle")
    reader = BundleReader(folder / "ffn.bundle")
    record = 3 * TINY["model_dim"] * 4
    total = sum(layer.widths.ffn_dim for layer in model.layers)
    cache = NeuronCache(reader, cap_bytes=int(cap_fraction * total) * record, window_tokens=2)
    kernel = FusedSparseFFN.from_cache(cache, model)
    assert np.shares_memory(kernel.bundles[0], cache.buffer.numpy())  # the slots themselves, no copy
    return SparseOpenELM(model, source_class(model), cache, fused=kernel), cache


@pytest.mark.parametrize("options", RELU_MODELS)
def test_the_kernel_on_the_cache_slots_equals_dense_under_eviction(options, tmp_path):
    model = tiny_openelm(**options)
    ids = prompt(16)
    dense = decode_logits(model, ids, prefill=1)
    sparse, cache = cache_decoder(model, tmp_path, TruePattern, cap_fraction=0.8)
    torch.testing.assert_close(decode_logits(sparse, ids, prefill=1), dense, rtol=0, atol=2e-5)
    assert sparse.sparse_ffn.reads_slots and sparse.sparse_ffn.neurons_read > 0
    assert cache.stats.evictions > 0 and cache.stats.hits > 0  # slots were reused for other neurons


def test_the_kernel_on_the_cache_slots_with_a_dropped_neuron_fails_the_tolerance(tmp_path):
    model = tiny_openelm(ffn_activation="relu")
    ids = prompt(16)
    dense = decode_logits(model, ids, prefill=1)
    wrong, _ = cache_decoder(model, tmp_path, DropStrongest, cap_fraction=0.8)
    assert not torch.allclose(decode_logits(wrong, ids, prefill=1), dense, rtol=0, atol=2e-5)
