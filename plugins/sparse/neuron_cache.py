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
  the current request are never victims.
- Missing neurons are read sorted by id; a run of consecutive ids is one `os.preadv` that scatters
  the run's records straight into their (arbitrary) slots, so no read is copied twice.
"""

from __future__ import annotations

import torch

from plugins.sparse.bundle import PARTS, BundleError, BundleReader
from plugins.sparse.provider import FetchStats, TokenClock
from toolkit.errors import ToolkitError

IOV_MAX = 1024  # Linux's limit on buffers in one preadv


class CacheCapacityError(ToolkitError):
    """The cache's byte cap cannot hold what one layer asks for at once."""


class NeuronCache:
    """`rows(layer, neuron_ids)` from DRAM where resident, else from the bundle (see provider.py)."""

    def __init__(self, reader: BundleReader, cap_bytes: int, window_tokens: int = 5) -> None:
        if reader.layout != "bundled":
            raise BundleError(f"{reader.path}: the neuron cache needs a bundled file, this one is {reader.layout!r}")
        if window_tokens < 1:
            raise CacheCapacityError(f"window_tokens must be at least 1, got {window_tokens}")
        self.reader, self.cap_bytes, self.window_tokens = reader, int(cap_bytes), window_tokens
        self.stats, self.clock, self.step = FetchStats(), TokenClock(), 0
        self.slot_bytes = max(reader.record_bytes(index) for index in range(len(reader.layers)))
        sizes = [layer.ffn_dim for layer in reader.layers]
        self.layer_base = torch.tensor([0, *sizes], dtype=torch.int64).cumsum(0)  # [L + 1]
        total_neurons = int(self.layer_base[-1])
        fixed = self.layer_base.element_size() * self.layer_base.numel() + 4 * total_neurons
        per_slot = self.slot_bytes + 4 + 8 + 8  # the record, slot_owner, slot_step, slot_token
        self.num_slots = min(max((self.cap_bytes - fixed) // per_slot, 0), total_neurons)
        if self.num_slots < 1:
            raise CacheCapacityError(f"a cap of {self.cap_bytes} bytes holds no neuron "
                                     f"(one needs {per_slot} bytes after {fixed} bytes of index)")
        self.neuron_to_slot = torch.full((total_neurons,), -1, dtype=torch.int32)
        self.slot_owner = torch.full((self.num_slots,), -1, dtype=torch.int32)
        self.slot_step = torch.full((self.num_slots,), -1, dtype=torch.int64)  # -1: free, evicted first
        self.slot_token = torch.full((self.num_slots,), -1, dtype=torch.int64)
        self.buffer = torch.empty(self.num_slots, self.slot_bytes, dtype=torch.uint8)  # [S, slot_bytes]
        self.buffer_bytes = self.buffer.numpy()  # the same memory, for preadv's buffer protocol
        # Per layer, the slots seen as [S, 3, D] in the file's dtype: views, no memory of their own.
        self.typed_slots = [self.buffer[:, :reader.record_bytes(index)].view(reader.dtype).unflatten(1, (PARTS, -1))
                            for index in range(len(reader.layers))]

    def allocated_bytes(self) -> int:
        """Bytes held by every tensor the cache owns (measured from their storages, views counted once)."""
        storages = {}
        for value in vars(self).values():
            if isinstance(value, torch.Tensor):
                storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
        return sum(storages.values())

    def resident_neurons(self, layer: int) -> torch.Tensor:
        """Sorted ids of the layer's neurons now in DRAM."""
        base, end = int(self.layer_base[layer]), int(self.layer_base[layer + 1])
        return torch.nonzero(self.neuron_to_slot[base:end] >= 0).flatten()

    def rows(self, layer: int, neuron_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up_rows [2n, D], down_rows [n, D]) for neuron_ids [n], loading what is not resident."""
        ffn_dim = self.reader.layers[layer].ffn_dim
        neuron_ids = neuron_ids.to(torch.int64).flatten()
        count = neuron_ids.numel()
        if count and (int(neuron_ids.min()) < 0 or int(neuron_ids.max()) >= ffn_dim):
            raise CacheCapacityError(f"layer {layer}: neuron ids must lie in [0, {ffn_dim})")
        if count > self.num_slots:
            raise CacheCapacityError(f"layer {layer} asks for {count} neurons at once, the cap of {self.cap_bytes} "
                                     f"bytes holds {self.num_slots}")
        if self.clock.tick(layer):
            self.stats.tokens += 1
        self.step += 1
        global_ids = neuron_ids + self.layer_base[layer]
        slots = self.neuron_to_slot[global_ids].to(torch.int64)  # [n]
        missing = slots < 0
        # Hits are this step's: stamping them first keeps them out of the victims below.
        self.slot_step[slots[~missing]] = self.step
        missing_ids = torch.unique(neuron_ids[missing])  # sorted, so consecutive ids form runs
        if missing_ids.numel():
            self._load(layer, missing_ids)
            slots = self.neuron_to_slot[global_ids].to(torch.int64)
        self.stats.hits += count - int(missing.sum())
        self.stats.misses += missing_ids.numel()
        self.slot_step[slots] = self.step
        self.slot_token[slots] = self.clock.token
        typed = self.typed_slots[layer]  # [S, 3, D]
        gate_up = torch.empty(2, count, typed.shape[2], dtype=typed.dtype)  # [2, n, D]
        torch.index_select(typed[:, 0], 0, slots, out=gate_up[0])
        torch.index_select(typed[:, 1], 0, slots, out=gate_up[1])
        return gate_up.view(2 * count, -1), torch.index_select(typed[:, 2], 0, slots)

    def _load(self, layer: int, missing_ids: torch.Tensor) -> None:
        """Read the sorted, absent `missing_ids` of `layer` into the least recently used slots."""
        victims = torch.topk(self.slot_step, missing_ids.numel(), largest=False).indices  # [m]
        owners = self.slot_owner[victims].to(torch.int64)
        evicted = owners >= 0
        self.stats.evictions += int(evicted.sum())
        in_window = self.slot_token[victims] > self.clock.token - self.window_tokens
        self.stats.window_evictions += int((evicted & in_window).sum())
        self.neuron_to_slot[owners[evicted]] = -1
        # Runs of consecutive ids: [start, end) index ranges into missing_ids.
        breaks = (torch.nonzero(missing_ids[1:] - missing_ids[:-1] != 1).flatten() + 1).tolist()
        record_bytes = self.reader.record_bytes(layer)
        ids, slot_list = missing_ids.tolist(), victims.tolist()
        for start, end in zip([0, *breaks], [*breaks, len(ids)]):
            for chunk in range(start, end, IOV_MAX):
                chunk_end = min(chunk + IOV_MAX, end)
                destinations = [memoryview(self.buffer_bytes[slot, :record_bytes]) for slot in slot_list[chunk:chunk_end]]
                self.reader.read_records_into(layer, ids[chunk], destinations)
                self.stats.reads_issued += 1
        self.stats.bytes_read += len(ids) * record_bytes
        global_ids = missing_ids + self.layer_base[layer]
        self.neuron_to_slot[global_ids] = victims.to(torch.int32)
        self.slot_owner[victims] = global_ids.to(torch.int32)
