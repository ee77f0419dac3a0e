"""Per-token cross-entropy of a block of logits, fast on the CPU: the oracle's scoring step.

The oracle scores every routing pattern of every token: 64 sequences x 256 tokens x 729 patterns
is 12 million rows of 4,096 logits. PyTorch's CPU `cross_entropy` (a log-softmax, then a pick)
runs at about half a billion logits a second here, which made it half of the oracle's time. Here
one compiled pass per row (numba) reads the logits in the dtype they were computed in (bfloat16 or
float32), takes the row's maximum, sums exp(logit - max) with a vectorisable exponential, and
returns max + log(sum) - logit[target]. Optionally each row is first multiplied by a
factor of its own and has a second block of logits added (see token_cross_entropy).

The exponential: exp(x) = 2^t with t = x log2(e) <= 0, split as t = k + f with k an integer and
|f| <= 1/2; 2^f = e^(f ln 2) by its Taylor series to the 6th power (relative error below 2e-7
for |f ln 2| <= 0.35), and 2^k put into the float's exponent bits. Terms below 2^-125 are
clamped there (they add at most 4096 x 2^-125 to a sum of at least 1). The result equals
`F.cross_entropy` on the float32 logits to a few 1e-6 (tested).

Without numba, or for other dtypes or devices, `F.cross_entropy` runs instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

try:  # optional: pip install 'toolkit[sparse]' (the setup script installs it)
    import numba
except ImportError:
    numba = None

LOG2_E = np.float32(1.4426950408889634)
LN_2 = np.float32(0.6931471805599453)
LOWEST_POWER = np.float32(-125.0)  # 2^-125 is still a normal float32
HALF, ONE = np.float32(0.5), np.float32(1.0)
TAYLOR = tuple(np.float32(1.0 / factorial) for factorial in (1, 2, 6, 24, 120, 720))  # 1/n!, n = 1..6
ROWS_PER_TASK = 64  # rows one parallel task scores with its own scratch
LANES = 16  # running maxima side by side: one AVX-512 register of float32


def _exponentials(values: np.ndarray, exponents: np.ndarray, peak: np.float32, scale: np.float32) -> None:
    """values <- e^y and exponents <- k, where scale (values - peak) = (k + y / ln 2) / log2(e): the
    row's exp(scale (value - peak)) = e^y 2^k, its two factors (a loop of its own, so that LLVM
    vectorises it). scale > 0."""
    c1, c2, c3, c4, c5, c6 = TAYLOR
    to_power = scale * LOG2_E
    for column in range(values.shape[0]):
        power = (values[column] - peak) * to_power  # <= 0
        power = power if power > LOWEST_POWER else LOWEST_POWER
        whole = np.int32(power - HALF)  # truncation: within 1/2 of power
        y = (power - np.float32(whole)) * LN_2
        values[column] = ONE + y * (c1 + y * (c2 + y * (c3 + y * (c4 + y * (c5 + y * c6)))))  # e^y
        exponents[column] = whole


def _row_max(values: np.ndarray, lanes: np.ndarray) -> np.float32:
    """The largest of values [V], through LANES running maxima (lanes [LANES] is scratch): LLVM
    vectorises an elementwise maximum, not a running one over a single value."""
    count = values.shape[0]
    whole = count - count % LANES
    lanes[:] = values[0]
    for start in range(0, whole, LANES):
        for lane in range(LANES):
            value = values[start + lane]
            lanes[lane] = value if value > lanes[lane] else lanes[lane]
    largest = lanes[0]
    for lane in range(LANES):
        largest = lanes[lane] if lanes[lane] > largest else largest
    for column in range(whole, count):
        largest = values[column] if values[column] > largest else largest
    return largest


def _row_losses(logit_bits: np.ndarray, addend_bits: np.ndarray, has_addend: bool, scales: np.ndarray, widen: int,
                targets: np.ndarray, ignore_index: int, first: int, last: int, values: np.ndarray, extra: np.ndarray,
                exponents: np.ndarray, lanes: np.ndarray, out: np.ndarray) -> None:
    """out[first:last]: the loss of each row's logits, scales[row] (logit_bits[row] + addend_bits[row]).
    logit_bits, addend_bits [N, V] (addend_bits only read when has_addend): float32 bits (int32,
    widen 0) or bfloat16 bits (uint16, widen 16); values, extra [V] float32, exponents [V] int32,
    lanes [LANES] float32 are scratch.
    All bit work is in int32: a conversion to unsigned would keep LLVM from vectorising."""
    vocab = logit_bits.shape[1]
    bits = values.view(np.int32)
    extra_bits = extra.view(np.int32)
    for row in range(first, last):
        target = targets[row]
        if target == ignore_index:
            out[row] = 0.0
            continue
        source = logit_bits[row]
        for column in range(vocab):  # bfloat16 is the top half of a float32
            bits[column] = np.int32(source[column]) << widen
        if has_addend:
            more = addend_bits[row]
            for column in range(vocab):
                extra_bits[column] = np.int32(more[column]) << widen
            for column in range(vocab):
                values[column] += extra[column]
        scale = scales[row]
        target_logit = values[target]
        peak = _row_max(values, lanes)  # the scaled row's maximum is scale * peak: scale > 0
        _exponentials(values, exponents, peak, scale)
        for column in range(vocab):  # times 2^k: add k to the exponent field
            bits[column] += exponents[column] << 23
        total = np.float32(0.0)
        for column in range(vocab):
            total += values[column]
        out[row] = scale * (peak - target_logit) + np.log(total)


def _all_rows(logit_bits: np.ndarray, addend_bits: np.ndarray, has_addend: bool, scales: np.ndarray, widen: np.int32,
              targets: np.ndarray, ignore_index: int, out: np.ndarray) -> int:
    """Every row's loss into out [N], tasks of ROWS_PER_TASK rows in parallel; returns the number of
    targets outside [0, V) that are not ignore_index (then nothing is scored: the loop reads
    logit_bits[row, target] unchecked)."""
    rows, vocab = logit_bits.shape
    invalid = 0
    for row in range(rows):
        target = targets[row]
        invalid += (target != ignore_index) & ((target < 0) | (target >= vocab))
    if invalid:
        return invalid
    tasks = (rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in numba.prange(tasks):
        values = np.empty(vocab, np.float32)
        extra = np.empty(vocab, np.float32)
        exponents = np.empty(vocab, np.int32)
        lanes = np.empty(LANES, np.float32)
        first = task * ROWS_PER_TASK
        _row_losses(logit_bits, addend_bits, has_addend, scales, widen, targets, ignore_index, first,
                    min(first + ROWS_PER_TASK, rows), values, extra, exponents, lanes, out)
    return 0


if numba is not None:
    # cache=True keeps the compiled code in __pycache__, so only the first run on a machine compiles
    _exponentials = numba.njit(fastmath=True, nogil=True, cache=True)(_exponentials)
    _row_max = numba.njit(fastmath=True, nogil=True, cache=True)(_row_max)
    _row_losses = numba.njit(fastmath=True, nogil=True, cache=True)(_row_losses)
    _all_rows = numba.njit(fastmath=True, parallel=True, cache=True)(_all_rows)

BITS = {torch.bfloat16: (torch.int16, np.uint16, 16), torch.float32: (torch.int32, np.int32, 0)}


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                        scales: torch.Tensor | None = None, addend: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row cross-entropy float32 [N] of scales[:, None] (logits + addend) against targets int64 [N]
    (0 where ignored): logits [N, V]; addend, like logits, or None (nothing added); scales float32
    [N], each > 0, or None (all 1). The oracle folds the final RMSNorm's per-token factor into the
    scales and adds a low-rank FFN's share of the logits as the addend (oracle.py)."""
    if addend is not None and (addend.shape != logits.shape or addend.dtype != logits.dtype):
        raise ValueError(f"addend {tuple(addend.shape)} {addend.dtype} must match logits "
                         f"{tuple(logits.shape)} {logits.dtype}")
    if scales is not None and not bool((scales > 0).all()):
        raise ValueError("scales must be > 0")
    if numba is None or logits.device.type != "cpu" or logits.dtype not in BITS or logits.requires_grad:
        full = logits.float() if addend is None else logits.float() + addend.float()
        if scales is not None:
            full = full * scales.float()[:, None]
        return F.cross_entropy(full, targets, ignore_index=ignore_index, reduction="none")
    signed, unsigned, widen = BITS[logits.dtype]
    bits = logits.contiguous().view(signed).numpy().view(unsigned)  # [N, V], the same memory
    addend_bits = bits if addend is None else addend.contiguous().view(signed).numpy().view(unsigned)
    row_scales = (np.ones(logits.shape[0], np.float32) if scales is None
                  else scales.detach().to(torch.float32).contiguous().numpy())
    out = np.empty(logits.shape[0], np.float32)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:  # the oracle's thread count, set once (not free per call)
        numba.set_num_threads(threads)
    if _all_rows(bits, addend_bits, addend is not None, row_scales, np.int32(widen), targets.contiguous().numpy(),
                 ignore_index, out):
        raise IndexError(f"targets must lie in [0, {logits.shape[1]}) or equal {ignore_index}")
    return torch.from_numpy(out)
