"""A DRAM cache of FFN neurons, capped in bytes, filled from a bundled file with windowing.

"LLM in a flash" (Alizadeh et al., ACL 2024): keep the neurons used by the last k tokens in DRAM
and read only the difference each token; manage the memory as one preallocated matrix of slots so
that nothing is allocated, copied around or freed while decoding.

- One uint8 buffer [S, slot_bytes] is allocated at construction and never reallocated; slot s holds
  one neuron's record (gate row, up row, down column: [3, D]) of any layer.
- `neuron_to_slot` [all neurons of all layers] maps a neuron to its slot (-1: not resident);
  `slot_owner` [S] maps back. Per slot, the step (call) and the token of its last use.
- The cap covers every tensor the cache allocates: slots and bookkeeping. S is the number of slots
  that fit.
- On a miss, victims are the slots used longest ago: free slots first, then neurons outside the
  window (not used by the last k tokens), and only if the window's neurons do not fit the cap,
  in-window neurons (counted as `window_evictions`; a cap below the window's working set). Slots of
  the current request are never victims. The oldest slots come from a queue sorted now and then,
  not from a partition of every slot per call (`_victims`).
- `resident_slots(layer, ids)` makes the neurons resident and names their slots: the fused kernel
  (fused_ffn.py) computes from `slot_records()` in place. `rows` gathers copies for other callers.
- Missing neurons are read sorted by id; a run of consecutive ids is one `os.preadv` that scatters
  the run's records straight into their (arbitrary) slots, so no read is copied twice.
- With `coalesce_gap_bytes`, two runs are one read when the records between them take at most
  that many bytes: those records land in one scratch record and are dropped. A device that takes
  tens of microseconds per read but streams a megabyte a millisecond reads a few unneeded
  records faster than it serves one more request (`cost_model.py` measures both; the bytes read
  include the dropped ones).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from plugins.sparse.bundle import PARTS, BundleError, BundleReader
from plugins.sparse.fetch_stats import FetchStats, TokenClock
from toolkit.errors import ToolkitError

IOV_MAX = 1024  # Linux's limit on buffers in one preadv


class CacheCapacityError(ToolkitError):
    """The cache's byte cap cannot hold what one layer asks for at once."""


class NeuronCache:
    """`rows(layer, neuron_ids)` from DRAM where resident, else from the bundle (see fetch_stats.py)."""

    def __init__(self, reader: BundleReader, cap_bytes: int, window_tokens: int = 5, read_threads: int = 1,
                 coalesce_gap_bytes: int = 0) -> None:
        if reader.layout != "bundled":
            raise BundleError(f"{reader.path}: the neuron cache needs a bundled file, this one is {reader.layout!r}")
        if window_tokens < 1:
            raise CacheCapacityError(f"window_tokens must be at least 1, got {window_tokens}")
        if coalesce_gap_bytes < 0:
            raise CacheCapacityError(f"coalesce_gap_bytes must be >= 0, got {coalesce_gap_bytes}")
        self.reader, self.cap_bytes, self.window_tokens = reader, int(cap_bytes), window_tokens
        self.coalesce_gap_bytes = int(coalesce_gap_bytes)
        # Several reads in flight at once: a device (flash, a virtual disk) serves a queue of
        # small reads much faster than one at a time; os.preadv releases the GIL while it waits.
        self.read_pool = ThreadPoolExecutor(read_threads, "neuron-read") if read_threads > 1 else None
        self.read_threads = read_threads
        self.stats, self.clock, self.step = FetchStats(), TokenClock(), 0
        self.slot_bytes = max(reader.record_bytes(index) for index in range(len(reader.layers)))
        sizes = [layer.ffn_dim for layer in reader.layers]
        # Bookkeeping in numpy: indexing small arrays costs about a microsecond there, tens in torch.
        self.layer_base = np.cumsum([0, *sizes], dtype=np.int64)  # [L + 1]
        total_neurons = int(self.layer_base[-1])
        scratch_bytes = self.slot_bytes if coalesce_gap_bytes else 0  # where skipped records land
        fixed = self.layer_base.nbytes + 4 * total_neurons + scratch_bytes
        # the record, slot_owner, slot_step, slot_token, and a place in the victim queue (slot, step)
        per_slot = self.slot_bytes + 4 + 8 + 8 + 4 + 8
        self.num_slots = min(max((self.cap_bytes - fixed) // per_slot, 0), total_neurons)
        if self.num_slots < 1:
            raise CacheCapacityError(f"a cap of {self.cap_bytes} bytes holds no neuron "
                                     f"(one needs {per_slot} bytes after {fixed} bytes of index)")
        self.neuron_to_slot = np.full(total_neurons, -1, dtype=np.int32)
        self.slot_owner = np.full(self.num_slots, -1, dtype=np.int32)
        self.slot_step = np.full(self.num_slots, -1, dtype=np.int64)  # -1: free, evicted first
        self.slot_token = np.full(self.num_slots, -1, dtype=np.int64)
        self.victim_queue = np.zeros(self.num_slots, dtype=np.int32)  # slots, oldest first (see _victims)
        self.queued_steps = np.zeros(self.num_slots, dtype=np.int64)  # their steps when queued
        self.queue_length = self.queue_position = 0
        self.buffer = torch.empty(self.num_slots, self.slot_bytes, dtype=torch.uint8)  # [S, slot_bytes]
        # The same memory as one flat byte view: slicing it for preadv's destinations costs ~0.1 us.
        self.buffer_view = memoryview(self.buffer.numpy()).cast("B")
        # Per layer, the slots seen as [S, 3, D] in the file's dtype, split into gate, up and down
        # [S, D] views (strided): no memory of their own.
        typed_slots = [self.buffer[:, :reader.record_bytes(index)].view(reader.dtype).unflatten(1, (PARTS, -1))
                       for index in range(len(reader.layers))]
        self.typed_parts = [(typed[:, 0], typed[:, 1], typed[:, 2]) for typed in typed_slots]  # [S, D] x 3
        self.record_bytes = [reader.record_bytes(index) for index in range(len(reader.layers))]
        self.scratch = torch.empty(scratch_bytes, dtype=torch.uint8)
        self.scratch_view = memoryview(self.scratch.numpy()).cast("B")

    def allocated_bytes(self) -> int:
        """Bytes held by every array the cache owns (measured from their memory; views counted once)."""
        held = {}
        for value in vars(self).values():
            if isinstance(value, torch.Tensor):
                held[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
            elif isinstance(value, np.ndarray):
                owner = value if value.base is None else value.base
                if isinstance(owner, np.ndarray):  # a numpy view of a tensor is counted with the tensor
                    held[owner.ctypes.data] = owner.nbytes
        return sum(held.values())

    def ffn_dim(self, layer: int) -> int:
        """F, the number of neurons of `layer`'s FFN (the RowProvider protocol's second method)."""
        return self.reader.layers[layer].ffn_dim

    def bytes_per_neuron(self, layer: int) -> int:
        return self.record_bytes[layer]

    def resident_neurons(self, layer: int) -> torch.Tensor:
        """Sorted ids of the layer's neurons now in DRAM."""
        base, end = self.layer_base[layer], self.layer_base[layer + 1]
        return torch.from_numpy(np.flatnonzero(self.neuron_to_slot[base:end] >= 0))

    def rows(self, layer: int, neuron_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up_rows [2n, D], down_rows [n, D]) for neuron_ids [n], loading what is not resident."""
        slots = self.resident_slots(layer, neuron_ids)  # [n]
        count = slots.size
        gate, up, down = self.typed_parts[layer]  # [S, D] each
        slot_index = torch.from_numpy(slots)  # [n]
        gate_up = torch.empty(2, count, gate.shape[1], dtype=gate.dtype)  # [2, n, D]
        torch.index_select(gate, 0, slot_index, out=gate_up[0])
        torch.index_select(up, 0, slot_index, out=gate_up[1])
        return gate_up.view(2 * count, -1), torch.index_select(down, 0, slot_index)

    def resident_slots(self, layer: int, neuron_ids: torch.Tensor) -> np.ndarray:
        """The slots (int64 [n], in neuron_ids order) holding neuron_ids [n] of `layer`, loading what
        is not resident: a kernel that reads `slot_records()` in place needs no gathered copy."""
        ffn_dim = self.reader.layers[layer].ffn_dim
        ids = neuron_ids.to(torch.int64).flatten().numpy()  # [n]
        count = ids.size
        if count and ids.view(np.uint64).max() >= ffn_dim:  # negative ids wrap to huge ones
            raise CacheCapacityError(f"layer {layer}: neuron ids must lie in [0, {ffn_dim})")
        if count > self.num_slots:
            raise CacheCapacityError(f"layer {layer} asks for {count} neurons at once, the cap of {self.cap_bytes} "
                                     f"bytes holds {self.num_slots}")
        if self.clock.tick(layer):
            self.stats.tokens += 1
        self.step += 1
        global_ids = ids + self.layer_base[layer]
        slots = self.neuron_to_slot[global_ids].astype(np.int64)  # [n]
        missing = slots < 0
        if missing.any():
            # Hits are this step's: stamping them first keeps them out of the victims.
            self.slot_step[slots[~missing]] = self.step
            missing_ids = np.unique(ids[missing])  # sorted, so consecutive ids form runs
            self._load(layer, missing_ids)
            slots = self.neuron_to_slot[global_ids].astype(np.int64)
            self.stats.misses += missing_ids.size
            self.stats.hits += count - missing_ids.size
        else:
            self.stats.hits += count
        self.slot_step[slots] = self.step
        self.slot_token[slots] = self.clock.token
        return slots

    def slot_records(self) -> np.ndarray:
        """Every slot as one record [S, R] in the file's dtype (float32 or float16: numpy has no
        bfloat16), the cache's own memory, no copy: a neuron of layer l occupies the first 3 D_l
        values of its slot's row (gate row | up row | down column), R = 3 x the widest D."""
        return self.buffer.view(self.reader.dtype).numpy()

    def _load(self, layer: int, missing_ids: np.ndarray) -> None:
        """Read the sorted, absent `missing_ids` of `layer` into the least recently used slots."""
        count = missing_ids.size
        victims = self._victims(count)  # [m]
        owners = self.slot_owner[victims]
        evicted = owners >= 0
        self.stats.evictions += int(evicted.sum())
        in_window = self.slot_token[victims] > self.clock.token - self.window_tokens
        self.stats.window_evictions += int((evicted & in_window).sum())
        self.neuron_to_slot[owners[evicted]] = -1
        # Runs: [start, end) index ranges into missing_ids, split where the gap is too wide.
        record_bytes = self.record_bytes[layer]
        gaps = np.diff(missing_ids) - 1  # [m - 1] records between consecutive missing ids
        breaks = np.flatnonzero(gaps > self.coalesce_gap_bytes // record_bytes) + 1
        run_starts, run_ends = np.concatenate(([0], breaks)), np.concatenate((breaks, [count]))  # [r] each
        spans = missing_ids[run_ends - 1] - missing_ids[run_starts] + 1  # [r] records each run reads
        self.stats.reads_issued += int((-(-spans // IOV_MAX)).sum())
        self.stats.bytes_read += int(spans.sum()) * record_bytes  # the dropped records too
        ids, starts = missing_ids.tolist(), (victims * self.slot_bytes).tolist()
        runs = list(zip(run_starts.tolist(), run_ends.tolist()))
        if self.read_pool is None or len(runs) == 1:
            self._read_runs(layer, ids, starts, runs)
        else:  # one batch of runs per thread, not one task per read: a task costs tens of microseconds.
            # Each thread builds its own reads' buffers, so that Python work overlaps other threads' waits.
            batches = [runs[index::self.read_threads] for index in range(self.read_threads)]
            for future in [self.read_pool.submit(self._read_runs, layer, ids, starts, batch)
                           for batch in batches if batch]:
                future.result()
        global_ids = missing_ids + self.layer_base[layer]
        self.neuron_to_slot[global_ids] = victims
        self.slot_owner[victims] = global_ids

    def _victims(self, count: int) -> np.ndarray:
        """The `count` least recently used slots (int64 [count]), free ones first.

        A partition of every slot's step per call would cost a few hundred microseconds per layer,
        so the oldest K slots are partitioned out and sorted once (K = count, or an eighth of the
        slots if more) and served in order over the following calls. An entry whose slot was used
        since (its step changed) is skipped: it is no longer old. The rest stay the oldest of all,
        since every slot outside the queue was at least as new when it was built, and steps only grow.
        """
        if count >= self.num_slots:
            return np.arange(self.num_slots)
        queued = self.victim_queue[self.queue_position:self.queue_length]  # [q]
        still_old = np.flatnonzero(self.slot_step[queued] == self.queued_steps[self.queue_position:self.queue_length])
        if still_old.size >= count:
            taken = still_old[:count]
            self.queue_position += int(taken[-1]) + 1  # entries before it: taken, or used since
            return queued[taken].astype(np.int64)
        size = min(self.num_slots, max(count, self.num_slots // 8))
        oldest = np.argpartition(self.slot_step, size - 1)[:size] if size < self.num_slots else np.arange(self.num_slots)
        oldest = oldest[np.argsort(self.slot_step[oldest], kind="stable")]  # [K], oldest first
        self.victim_queue[:size] = oldest
        self.queued_steps[:size] = self.slot_step[oldest]
        self.queue_length, self.queue_position = size, count
        return oldest[:count].astype(np.int64)

    def _read_runs(self, layer: int, ids: list[int], starts: list[int], runs: list[tuple[int, int]]) -> None:
        """Issue the reads of runs [(start, end)] of ids (sorted neuron ids) into slots at byte `starts`."""
        record_bytes = self.record_bytes[layer]
        for start, end in runs:
            for first_neuron, destinations in self._run_reads(ids[start:end], starts[start:end], record_bytes):
                self.reader.read_records_into(layer, first_neuron, destinations)

    def _run_reads(self, ids: list[int], starts: list[int], record_bytes: int) -> list:
        """Reads covering ids[0] .. ids[-1] (sorted): wanted records into their slots at `starts`,
        the records between them (if any) into the scratch record, at most IOV_MAX buffers per read."""
        scratch, view = self.scratch_view[:record_bytes], self.buffer_view
        if ids[-1] - ids[0] == len(ids) - 1:  # consecutive: the common case, no gaps to fill
            buffers = [view[first:first + record_bytes] for first in starts]
        else:
            buffers = []
            for index, (neuron, first) in enumerate(zip(ids, starts)):
                if index:
                    buffers.extend([scratch] * (neuron - ids[index - 1] - 1))
                buffers.append(view[first:first + record_bytes])
        return [(ids[0] + chunk, buffers[chunk:chunk + IOV_MAX]) for chunk in range(0, len(buffers), IOV_MAX)]

    def close(self) -> None:
        """Stop the read threads (if any); the cache's memory goes with the object."""
        if self.read_pool is not None:
            self.read_pool.shutdown()
            self.read_pool = None
