"""Sparse FFN decoding equals dense decoding: exactly with every neuron active, to float tolerance
with the true ReLU pattern; the row provider hands out the right rows."""

from __future__ import annotations

import pytest
import torch

from plugins.lm.sampling import generate
from plugins.sparse.predictor import LowRankPredictor, PredictedPattern
from plugins.sparse.provider import DramRowProvider, RowProvider
from plugins.sparse.sparse_ffn import AllActive, SparseOpenELM, TruePattern
from toolkit.errors import RecipeError

from sparse_models import TINY, prompt, tiny_openelm

RELU_MODELS = [{"ffn_activation": "relu"}, {"ffn_activation": "relu", "relu_after_norm": True},
               {"ffn_activation": "shifted_relu", "activation_shift": 0.02}]


def decode_logits(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits [B, S, V]: a prefill of `prefill` tokens, then one token per step."""
    cache = model.make_cache(ids.shape[0], ids.shape[1])
    steps = [model.forward_step(ids[:, :prefill], cache)]
    steps += [model.forward_step(ids[:, i:i + 1], cache) for i in range(prefill, ids.shape[1])]
    return torch.cat(steps, dim=1)


def always_active_predictors(model) -> list[LowRankPredictor]:
    """Real predictors whose bias puts every neuron far above the threshold."""
    predictors = []
    for layer in model.layers:
        predictor = LowRankPredictor(TINY["model_dim"], layer.widths.ffn_dim, rank=4)
        with torch.no_grad():
            predictor.up.bias.fill_(1e4)
        predictors.append(predictor)
    return predictors


@pytest.mark.parametrize("options", [{}, *RELU_MODELS])
def test_every_neuron_predicted_active_equals_dense_exactly(options):
    model = tiny_openelm(**options)
    ids = prompt(12)
    dense = decode_logits(model, ids, prefill=5)
    for source in (AllActive(), PredictedPattern(always_active_predictors(model))):
        sparse = SparseOpenELM(model, source)
        assert torch.equal(decode_logits(sparse, ids, prefill=5), dense)
        assert sparse.sparse_ffn.neurons_read == 0  # nothing gathered: the dense FFN ran


@pytest.mark.parametrize("options", RELU_MODELS)
def test_true_relu_pattern_equals_dense_to_float_tolerance(options):
    model = tiny_openelm(**options)
    ids = prompt(12)
    dense = decode_logits(model, ids, prefill=5)
    sparse = SparseOpenELM(model, TruePattern(model))
    torch.testing.assert_close(decode_logits(sparse, ids, prefill=5), dense, rtol=0, atol=2e-5)
    total = sum(layer.widths.ffn_dim for layer in model.layers)
    # the gather path ran: the single-token steps read only part of each FFN
    assert 0 < sparse.sparse_ffn.neurons_read < 8 * total


class DropStrongest:
    """The true pattern minus each token's most strongly active neuron: a wrong answer."""

    def __init__(self, model) -> None:
        self.true = TruePattern(model)
        self.model = model

    def active(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        mask = self.true.active(layer, hidden)
        strongest = self.model.layers[layer].ffn.intermediate(hidden, inference=True).abs().argmax(-1, keepdim=True)
        return mask.scatter(-1, strongest, False)


def test_the_tolerance_catches_a_dropped_neuron():
    model = tiny_openelm(ffn_activation="relu")
    ids = prompt(12)
    dense = decode_logits(model, ids, prefill=5)
    wrong = decode_logits(SparseOpenELM(model, DropStrongest(model)), ids, prefill=5)
    assert not torch.allclose(wrong, dense, rtol=0, atol=2e-5)


def test_batched_prefill_keeps_each_tokens_own_neurons_and_sampling_agrees():
    model = tiny_openelm(ffn_activation="relu")
    ids = prompt(10, batch=3)
    sparse = SparseOpenELM(model, TruePattern(model))
    torch.testing.assert_close(sparse(ids), model(ids), rtol=0, atol=2e-5)
    single = prompt(6)
    assert torch.equal(generate(sparse, single, max_new_tokens=10), generate(model, single, max_new_tokens=10))


def test_dram_provider_hands_out_gate_up_and_down_rows():
    model = tiny_openelm(ffn_activation="relu")
    provider = DramRowProvider.from_layers(model.layers)
    assert isinstance(provider, RowProvider)
    ffn = model.layers[2].ffn
    ffn_dim = ffn.proj_2.weight.shape[1]
    assert provider.ffn_dim(2) == ffn_dim == model.layers[2].widths.ffn_dim
    ids = torch.tensor([5, 0, ffn_dim - 1])
    gate_up, down = provider.rows(2, ids)
    weight = ffn.proj_1.weight
    assert torch.equal(gate_up, torch.cat((weight[[5, 0, ffn_dim - 1]], weight[[ffn_dim + 5, ffn_dim, 2 * ffn_dim - 1]])))
    assert torch.equal(down, ffn.proj_2.weight[:, [5, 0, ffn_dim - 1]].t())
    assert provider.bytes_per_neuron(2) == 3 * TINY["model_dim"] * 4


def test_the_disk_neuron_cache_plugs_in_as_the_row_provider(tmp_path):
    from plugins.sparse.bundle import BundleReader, write_bundle
    from plugins.sparse.neuron_cache import NeuronCache

    model = tiny_openelm(ffn_activation="relu")
    write_bundle(model, tmp_path / "ffn.bundle")
    reader = BundleReader(tmp_path / "ffn.bundle")
    cache = NeuronCache(reader, cap_bytes=sum(DramRowProvider.from_layers(model.layers).bytes_per_neuron(i) *
                                              layer.widths.ffn_dim for i, layer in enumerate(model.layers)))
    assert isinstance(cache, RowProvider)
    ids = prompt(12)
    dense = decode_logits(model, ids, prefill=1)
    from_disk = decode_logits(SparseOpenELM(model, TruePattern(model), cache), ids, prefill=1)
    torch.testing.assert_close(from_disk, dense, rtol=0, atol=2e-5)


def test_releasing_the_ffn_weights_leaves_meta_tensors_of_the_same_shapes():
    from plugins.sparse.decoder import release_ffn_weights

    model = tiny_openelm(ffn_activation="relu")
    shapes = [(layer.ffn.proj_1.weight.shape, layer.ffn.proj_2.weight.shape) for layer in model.layers]
    gates = [layer.ffn.proj_1.weight[: layer.widths.ffn_dim].clone() for layer in model.layers]
    total = sum(p.numel() * 4 for layer in model.layers for p in layer.ffn.parameters())
    assert release_ffn_weights(model, keep_gate=True) == total - sum(gate.numel() * 4 for gate in gates)
    for layer, (fused, down), gate in zip(model.layers, shapes, gates):
        assert torch.equal(layer.ffn.proj_1.weight, gate)  # the oracle's gate rows stay
        assert layer.ffn.proj_2.weight.is_meta and layer.ffn.proj_2.weight.shape == down
    other = tiny_openelm(ffn_activation="relu")
    assert release_ffn_weights(other, keep_gate=False) == total
    assert all(p.is_meta for layer in other.layers for p in layer.ffn.parameters())
    with pytest.raises(RecipeError, match="FFN weights were released"):  # never a matmul on garbage
        other(prompt(4))
