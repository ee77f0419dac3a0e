"""glibc malloc settings for CPU training, applied at run time with mallopt.

With glibc's defaults, tensors of a few MB (logits and their gradients) are fresh mmaps every
step that the kernel must zero and fault in (~95,000 minor faults per step measured for a 7M LM
at 4096 tokens per step), which costs 10-20% of a CPU step. Raising the mmap and trim
thresholds keeps that memory in the heap for reuse. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
ONE_GIB = 1 << 30


def keep_freed_memory_for_reuse() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB; False where that is not glibc Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, ONE_GIB)) and bool(mallopt(M_TRIM_THRESHOLD, ONE_GIB))
