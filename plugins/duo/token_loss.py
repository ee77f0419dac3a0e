"""Per-token cross-entropy of a block of logits, fast on the CPU: the oracle's scoring step.

The oracle scores every routing pattern of every token: 64 sequences x 256 tokens x 729 patterns
is 12 million rows of 4,096 logits. PyTorch's CPU `cross_entropy` (a log-softmax, then a pick)
runs at about half a billion logits a second here, which made it half of the oracle's time. Here
one compiled pass per row (numba) reads the logits in the dtype they were computed in (bfloat16 or
float32), takes the row's maximum, sums exp(logit - max) with a vectorisable exponential, and
returns max + log(sum) - logit[target].

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


def _exponentials(values: np.ndarray, exponents: np.ndarray, peak: np.float32) -> None:
    """values <- e^y and exponents <- k, where values - peak = (k + y / ln 2) / log2(e): the row's
    exp(value - peak) = e^y 2^k, its two factors (a loop of its own, so that LLVM vectorises it)."""
    c1, c2, c3, c4, c5, c6 = TAYLOR
    for column in range(values.shape[0]):
        power = (values[column] - peak) * LOG2_E  # <= 0
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


def _row_losses(logit_bits: np.ndarray, widen: int, targets: np.ndarray, ignore_index: int, first: int, last: int,
                values: np.ndarray, exponents: np.ndarray, lanes: np.ndarray, out: np.ndarray) -> None:
    """out[first:last]: the loss of each row. logit_bits [N, V]: float32 bits (int32, widen 0) or
    bfloat16 bits (uint16, widen 16); values [V] float32, exponents [V] int32, lanes [LANES] float32
    are scratch.
    All bit work is in int32: a conversion to unsigned would keep LLVM from vectorising."""
    vocab = logit_bits.shape[1]
    bits = values.view(np.int32)
    for row in range(first, last):
        target = targets[row]
        if target == ignore_index:
            out[row] = 0.0
            continue
        source = logit_bits[row]
        for column in range(vocab):  # bfloat16 is the top half of a float32
            bits[column] = np.int32(source[column]) << widen
        target_logit = values[target]
        peak = _row_max(values, lanes)
        _exponentials(values, exponents, peak)
        for column in range(vocab):  # times 2^k: add k to the exponent field
            bits[column] += exponents[column] << 23
        total = np.float32(0.0)
        for column in range(vocab):
            total += values[column]
        out[row] = peak + np.log(total) - target_logit


def _all_rows(logit_bits: np.ndarray, widen: np.int32, targets: np.ndarray, ignore_index: int,
              out: np.ndarray) -> int:
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
        exponents = np.empty(vocab, np.int32)
        lanes = np.empty(LANES, np.float32)
        first = task * ROWS_PER_TASK
        _row_losses(logit_bits, widen, targets, ignore_index, first, min(first + ROWS_PER_TASK, rows),
                    values, exponents, lanes, out)
    return 0


if numba is not None:
    # cache=True keeps the compiled code in __pycache__, so only the first run on a machine compiles
    _exponentials = numba.njit(fastmath=True, nogil=True, cache=True)(_exponentials)
    _row_max = numba.njit(fastmath=True, nogil=True, cache=True)(_row_max)
    _row_losses = numba.njit(fastmath=True, nogil=True, cache=True)(_row_losses)
    _all_rows = numba.njit(fastmath=True, parallel=True, cache=True)(_all_rows)

BITS = {torch.bfloat16: (torch.int16, np.uint16, 16), torch.float32: (torch.int32, np.int32, 0)}


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-row cross-entropy float32 [N] of logits [N, V] against targets int64 [N] (0 where ignored)."""
    if numba is None or logits.device.type != "cpu" or logits.dtype not in BITS or logits.requires_grad:
        return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="none")
    signed, unsigned, widen = BITS[logits.dtype]
    bits = logits.contiguous().view(signed).numpy().view(unsigned)  # [N, V], the same memory
    out = np.empty(logits.shape[0], np.float32)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:  # the oracle's thread count, set once (not free per call)
        numba.set_num_threads(threads)
    if _all_rows(bits, np.int32(widen), targets.contiguous().numpy(), ignore_index, out):
        raise IndexError(f"targets must lie in [0, {logits.shape[1]}) or equal {ignore_index}")
    return torch.from_numpy(out)
