"""A fused gather for one token's sparse FFN: each active neuron's weights read once, in place.

The torch path of SparseFFN gathers the active neurons' rows into a buffer (index_select) and then
multiplies: the gathered bytes are read from DRAM, written to the buffer and read again, and the
gather itself runs well below the copy bandwidth (rows of a few KB at scattered addresses). At
batch 1 that costs about what sparsity saves: on SmolLM2's FFN shape (D 576, F 1536, 30 layers,
318 MB of float32) with 35% of the neurons active the torch gather took about as long as the
dense FFN. This kernel walks the active neurons of a neuron-major bundle instead, the layout
"LLM in a flash" stores on flash, here in DRAM:

    bundle [F, 3D] float32: row i = gate row i | up row i | down-projection column i

and for each one computes g = <gate_i, h>; only if act(g) != 0 does it go on to u = <up_i, h>
and add act(g) * u * down_i to the output: at most one contiguous 12 D-byte read per neuron (4 D
for a neuron predicted active that does not fire), no copy, no intermediate tensor.
`FusedPredictedPattern` does the same for the low-rank predictors: a token's predicted-active
neuron ids come out of one compiled loop instead of five torch calls (two matmuls, a compare,
a reduction, nonzero), whose dispatch cost per layer was about what the predictor's bytes cost.

The kernel is compiled by numba (an optional dependency, the `sparse` extra); `available()` says
whether it can run. Without numba, or for weights that are not float32, SparseFFN keeps its
torch gather. Summation order differs from the dense matmul (fastmath lets LLVM vectorise the
dot products), so results equal the dense FFN to float tolerance, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from plugins.sparse.bundle import ffn_weights, layer_parts
from plugins.sparse.predictor import LowRankPredictor, PredictedPattern

try:  # optional: pip install 'toolkit[sparse]'
    import numba
except ImportError:  # the torch gather stays in use
    numba = None

RELU_ACTIVATIONS = ("relu", "shifted_relu")


def available() -> bool:
    """Whether the fused kernel can run here (numba imports)."""
    return numba is not None


def gathered_ffn(bundle: np.ndarray, neuron_ids: np.ndarray, hidden: np.ndarray, shift: np.float32,
                 out: np.ndarray) -> np.ndarray:
    """out [D] = sum over i in neuron_ids of relu(<gate_i, h> - shift) * <up_i, h> * down_i.

    bundle [N, >= 3D] float32 (gate | up | down column in the first 3D values of a row), neuron_ids
    int64 [n] (rows of it: neuron ids, or a cache's slots), hidden [D].
    """
    width = hidden.shape[0]
    zero = np.float32(0.0)
    out[:] = zero
    for index in range(neuron_ids.shape[0]):
        row = bundle[neuron_ids[index]]  # [3D], contiguous
        gate = zero
        for column in range(width):
            gate += row[column] * hidden[column]
        gate -= shift
        if gate > zero:  # a neuron that does not fire adds nothing: its up row and down column stay unread
            up = zero
            for column in range(width):
                up += row[width + column] * hidden[column]
            activation = gate * up
            for column in range(width):
                out[column] += activation * row[2 * width + column]
    return out


def _predicted_ids(down: np.ndarray, up_transposed: np.ndarray, bias: np.ndarray, hidden: np.ndarray,
                   logit_threshold: np.float32, bottleneck: np.ndarray, logits: np.ndarray, ids: np.ndarray) -> int:
    """Writes the neurons whose logit up (down h) + bias exceeds the threshold into ids; returns how many.

    down [r, D], up_transposed [r, F] (the predictor's up weight, transposed so the inner loop runs
    along F and vectorises), bias [F], hidden [D]; bottleneck [r] and logits [F] are scratch,
    ids int64 [F].
    """
    zero = np.float32(0.0)
    for rank_index in range(down.shape[0]):
        total = zero
        for column in range(hidden.shape[0]):
            total += down[rank_index, column] * hidden[column]
        bottleneck[rank_index] = total
    logits[:] = bias
    for rank_index in range(up_transposed.shape[0]):
        weight = bottleneck[rank_index]
        for neuron in range(logits.shape[0]):
            logits[neuron] += up_transposed[rank_index, neuron] * weight
    count = 0
    for neuron in range(logits.shape[0]):
        if logits[neuron] > logit_threshold:
            ids[count] = neuron
            count += 1
    return count


if numba is not None:
    # cache=True keeps the compiled code in __pycache__, so only the first run on a machine compiles
    gathered_ffn = numba.njit(fastmath=True, nogil=True, cache=True)(gathered_ffn)
    _predicted_ids = numba.njit(fastmath=True, nogil=True, cache=True)(_predicted_ids)


def float32_array(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy copy of `tensor` (what the compiled loops read)."""
    return np.ascontiguousarray(tensor.detach().to(torch.float32).cpu().numpy())


def bundle_layer(fused_gate_up: torch.Tensor, down: torch.Tensor) -> np.ndarray:
    """The neuron-major bundle [F, 3D] of one FFN: fused_gate_up [2F, D] (gate rows, then up rows), down [D, F].

    The same records as the "bundled" layout of a bundle file (bundle.py), here in DRAM.
    """
    parts = layer_parts(fused_gate_up.detach(), down.detach())  # [3, F, D]
    return float32_array(parts.transpose(0, 1).reshape(down.shape[1], -1))  # [F, 3D]


class FusedSparseFFN:
    """One token's FFN over chosen records, per layer, from neuron-major bundles [N, 3D] float32.

    `from_model` builds the bundles once from the model's weights: a float32 copy of every FFN (as
    much memory again as the FFN weights), indexed by neuron id. `from_cache` reads a NeuronCache's
    slots in place instead (every layer shares the one slot matrix, indexed by slot): weights
    served from disk are then computed where they were read to, with no gathered copy.
    """

    def __init__(self, bundles: list[np.ndarray], shift: float) -> None:
        """bundles: per layer the records [N, >= 3D] float32 the ids of a call index; shift: b of relu(g - b)."""
        if not available():
            raise RuntimeError("the fused sparse FFN needs numba: pip install 'toolkit[sparse]'")
        self.bundles = bundles
        self.shift = np.float32(shift)
        self.outputs = [np.empty(bundle.shape[1] // 3, dtype=np.float32) for bundle in self.bundles]
        # compile (or load the cached machine code) now, not inside the first timed decoding step
        gathered_ffn(self.bundles[0], np.zeros(1, dtype=np.int64), np.zeros(self.outputs[0].shape[0], np.float32),
                     self.shift, self.outputs[0])

    @classmethod
    def from_model(cls, model) -> FusedSparseFFN:
        """The kernel over an OpenELM's FFNs (`model.layers[i].ffn`), bundled in DRAM."""
        return cls([bundle_layer(fused, down) for fused, down in ffn_weights(model)], model.layers[0].ffn.shift)

    @classmethod
    def from_cache(cls, cache, model) -> FusedSparseFFN:
        """The kernel over a float32 NeuronCache's slot records (call it with slots, not neuron ids)."""
        records = cache.slot_records()  # [S, 3D]
        kernel = cls([records] * len(model.layers), model.layers[0].ffn.shift)
        # one output per layer, sized by the layer's own width (the slot rows fit the widest)
        kernel.outputs = [np.empty(layer.ffn.proj_2.weight.shape[0], dtype=np.float32) for layer in model.layers]
        return kernel

    def down_rows(self) -> list[torch.Tensor]:
        """Per layer the down-projection columns as rows [F, D]: views of the bundles (no copy), for
        a DramRowProvider serving the steps of several tokens."""
        return [torch.from_numpy(bundle)[:, 2 * (bundle.shape[1] // 3):] for bundle in self.bundles]

    @classmethod
    def supports(cls, weight: torch.Tensor, activation: str) -> bool:
        """Whether a model whose FFN weight is `weight` and activation `activation` can take the kernel."""
        return available() and weight.dtype == torch.float32 and weight.device.type == "cpu" \
            and activation in RELU_ACTIVATIONS

    def __call__(self, layer: int, hidden: torch.Tensor, neuron_ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """hidden [1, 1, D] float32 and the records to compute, int64 [n] (neuron ids, or a cache's
        slots) -> FFN output [1, 1, D] (a fresh tensor)."""
        vector = hidden.reshape(-1).contiguous().numpy()  # [D]
        ids = neuron_ids.numpy() if isinstance(neuron_ids, torch.Tensor) else neuron_ids
        gathered_ffn(self.bundles[layer], ids, vector, self.shift, self.outputs[layer])
        return torch.from_numpy(self.outputs[layer].copy()).view(1, 1, -1)  # [1, 1, D]


class FusedPredictedPattern(PredictedPattern):
    """PredictedPattern whose one-token calls also have `active_ids`: the predicted neurons' ids, compiled.

    Several tokens at once still go through the torch predictors (`active`, the mask).
    """

    def __init__(self, predictors: list[LowRankPredictor]) -> None:
        super().__init__(predictors)
        if not available():
            raise RuntimeError("the fused predictors need numba: pip install 'toolkit[sparse]'")
        self.weights = [(float32_array(p.down.weight), float32_array(p.up.weight.t()), float32_array(p.up.bias),
                         np.float32(p.logit_threshold)) for p in predictors]  # down [r, D], up^T [r, F], bias [F]
        self.bottlenecks = [np.empty(down.shape[0], dtype=np.float32) for down, _, _, _ in self.weights]
        self.logits = [np.empty(bias.shape[0], dtype=np.float32) for _, _, bias, _ in self.weights]
        self.ids = [np.empty(bias.shape[0], dtype=np.int64) for _, _, bias, _ in self.weights]
        self.active_ids(0, torch.zeros(1, 1, self.weights[0][0].shape[1]))  # compile now, not in a timed step

    def active_ids(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """One token's predicted-active neurons: hidden [1, 1, D] -> int64 [n], ascending."""
        down, up_transposed, bias, threshold = self.weights[layer]
        count = _predicted_ids(down, up_transposed, bias, hidden.reshape(-1).contiguous().numpy(), threshold,
                               self.bottlenecks[layer], self.logits[layer], self.ids[layer])
        return torch.from_numpy(self.ids[layer][:count])
