"""The DRAM neuron cache (plugins/sparse/neuron_cache.py) and the naive loader: exact rows, the cap,
windowing, and the reads each issues."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle_fixtures import tiny_model
from helpers import assert_error_output
from plugins.openelm.kernels import swiglu_reference
from plugins.sparse.bundle import BundleError, BundleReader, write_bundle
from plugins.sparse.naive_loader import NaiveNeuronLoader
from plugins.sparse.neuron_cache import CacheCapacityError, NeuronCache
from toolkit.cli.common import run_cli

RECORD = 3 * 16 * 4  # one neuron of width 16 in float32: gate row, up row, down column
INDEX = 8 * 3 + 4 * (24 + 40)  # layer_base [L + 1] int64 and neuron_to_slot [all neurons] int32
PER_SLOT = RECORD + 4 + 8 + 8 + 4 + 8  # the record, its owner, last step and last token, its victim-queue place


@pytest.fixture
def bundle(tmp_path):
    model = tiny_model()
    write_bundle(model, tmp_path / "ffn.bin")
    write_bundle(model, tmp_path / "split.bin", layout="split")
    return model, tmp_path


def dense_rows(model, layer: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gate_up, down = model.layers[layer].ffn.proj_1.weight.detach(), model.layers[layer].ffn.proj_2.weight.detach()
    return gate_up[torch.cat([ids, ids + down.shape[1]])], down[:, ids].t()


@pytest.mark.parametrize("read_threads", [1, 3])
def test_cache_rows_equal_the_dense_rows_exactly_under_eviction(bundle, read_threads):
    model, folder = bundle
    generator = torch.Generator().manual_seed(3)
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, INDEX + 30 * PER_SLOT, window_tokens=2, read_threads=read_threads)
        assert cache.num_slots == 30
        for _ in range(12):
            for layer, ffn_dim in enumerate((24, 40)):
                ids = torch.randperm(ffn_dim, generator=generator)[:int(torch.randint(1, 25, (1,), generator=generator))]
                gate_up, down = cache.rows(layer, ids)
                expected_gate_up, expected_down = dense_rows(model, layer, ids)
                assert gate_up.shape == (2 * len(ids), 16) and down.shape == (len(ids), 16)
                assert torch.equal(gate_up, expected_gate_up) and torch.equal(down, expected_down)
        assert cache.stats.tokens == 12 and cache.stats.evictions > 0
        cache.close()


def test_every_neuron_gives_the_dense_ffn_exactly(bundle):
    model, folder = bundle
    x = torch.randn(3, 16)
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, 10**6)
        for layer, ffn_dim in enumerate((24, 40)):
            gate_up, down = cache.rows(layer, torch.arange(ffn_dim))
            sparse = swiglu_reference(torch.nn.functional.linear(x, gate_up)) @ down  # [3, D]
            assert torch.equal(sparse, model.layers[layer].ffn(x))


@pytest.mark.parametrize("cap", [INDEX + PER_SLOT, INDEX + 7 * PER_SLOT + PER_SLOT - 1, INDEX + 64 * PER_SLOT, 10**7])
def test_the_cache_never_allocates_more_than_its_cap(bundle, cap):
    _, folder = bundle
    generator = torch.Generator().manual_seed(0)
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, cap)
        assert cache.allocated_bytes() <= cap
        # As many slots as fit: one more would break the cap (until every neuron has one).
        assert cache.num_slots == 64 or cache.allocated_bytes() + PER_SLOT > cap
        pointer, allocated = cache.buffer.data_ptr(), cache.allocated_bytes()
        for _ in range(20):
            for layer, ffn_dim in enumerate((24, 40)):
                count = min(cache.num_slots, 1 + int(torch.randint(0, ffn_dim, (1,), generator=generator)))
                cache.rows(layer, torch.randperm(ffn_dim, generator=generator)[:count])
                resident = len(cache.resident_neurons(0)) + len(cache.resident_neurons(1))
                assert resident <= cache.num_slots
        # The buffer was never reallocated or grown.
        assert cache.buffer.data_ptr() == pointer and cache.allocated_bytes() == allocated <= cap


def test_windowing_reads_only_neurons_not_resident(bundle):
    _, folder = bundle
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, 10**6, window_tokens=3)
        assert (cache.ffn_dim(0), cache.ffn_dim(1), cache.bytes_per_neuron(1)) == (24, 40, RECORD)
        cache.rows(1, torch.arange(0, 10))
        assert (cache.stats.misses, cache.stats.reads_issued, cache.stats.bytes_read) == (10, 1, 10 * RECORD)
        # Next token: 5 of the 10 again, 12..14 (one run) and 20, 22 (two runs): 5 neurons, 3 reads.
        cache.rows(1, torch.tensor([22, 5, 12, 6, 13, 7, 20, 8, 14, 9]))
        assert (cache.stats.misses, cache.stats.hits) == (15, 5)
        assert (cache.stats.reads_issued, cache.stats.bytes_read) == (4, 15 * RECORD)
        # Everything resident: no read at all.
        cache.rows(1, torch.tensor([0, 22, 14]))
        assert (cache.stats.reads_issued, cache.stats.bytes_read, cache.stats.hits) == (4, 15 * RECORD, 8)
        assert cache.stats.tokens == 3


def test_coalescing_reads_narrow_gaps_in_one_read_and_drops_them(bundle):
    _, folder = bundle
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, 10**6, coalesce_gap_bytes=2 * RECORD)  # gaps of up to 2 records
        # Runs 0..1, 4 (gap 2: joined), 8 (gap 3: apart), 10 (gap 1: joined): 2 reads, 3 records dropped.
        gate_up, down = cache.rows(1, torch.tensor([10, 0, 4, 1, 8]))
        assert (cache.stats.reads_issued, cache.stats.misses) == (2, 5)
        assert cache.stats.bytes_read == (5 + 3) * RECORD
        # The dropped records landed nowhere: the resident set is what was asked for.
        assert cache.resident_neurons(1).tolist() == [0, 1, 4, 8, 10]
        fresh = NeuronCache(reader, 10**6)
        expected = fresh.rows(1, torch.tensor([10, 0, 4, 1, 8]))
        assert torch.equal(gate_up, expected[0]) and torch.equal(down, expected[1])
        assert fresh.stats.reads_issued == 4 and fresh.stats.bytes_read == 5 * RECORD


@pytest.mark.parametrize("read_threads", [1, 3])
def test_coalesced_reads_split_at_the_iovec_limit_and_stay_exact(bundle, monkeypatch, read_threads):
    """Reads of more buffers than preadv takes at once are split; the rows still equal the weights."""
    from plugins.sparse import neuron_cache

    monkeypatch.setattr(neuron_cache, "IOV_MAX", 3)
    model, folder = bundle
    generator = torch.Generator().manual_seed(5)
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, INDEX + RECORD + 30 * PER_SLOT, window_tokens=2, read_threads=read_threads,
                            coalesce_gap_bytes=4 * RECORD)
        assert cache.num_slots == 30 and cache.allocated_bytes() <= INDEX + RECORD + 30 * PER_SLOT
        for _ in range(10):
            for layer, ffn_dim in enumerate((24, 40)):
                ids = torch.randperm(ffn_dim, generator=generator)[:int(torch.randint(1, 25, (1,), generator=generator))]
                gate_up, down = cache.rows(layer, ids)
                expected_gate_up, expected_down = dense_rows(model, layer, ids)
                assert torch.equal(gate_up, expected_gate_up) and torch.equal(down, expected_down)
        assert cache.stats.evictions > 0
        cache.close()
        with pytest.raises(CacheCapacityError, match="coalesce_gap_bytes must be >= 0"):
            NeuronCache(reader, 10**6, coalesce_gap_bytes=-1)


def test_eviction_keeps_the_window_and_drops_older_neurons_first(bundle):
    _, folder = bundle
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, INDEX + 6 * PER_SLOT, window_tokens=2)
        assert cache.num_slots == 6
        cache.rows(0, torch.tensor([0, 1]))  # token 1
        cache.rows(0, torch.tensor([2, 3]))  # token 2
        cache.rows(0, torch.tensor([4, 5]))  # token 3: the window (tokens 2, 3) is 2..5
        cache.rows(0, torch.tensor([3, 6, 7]))  # token 4: 6, 7 replace token 1's neurons
        assert cache.resident_neurons(0).tolist() == [2, 3, 4, 5, 6, 7]
        assert (cache.stats.evictions, cache.stats.window_evictions) == (2, 0)
        cache.rows(0, torch.tensor([8, 9, 10]))  # token 5: the window (3, 6, 7) stays; 2, 4, 5 go
        assert cache.resident_neurons(0).tolist() == [3, 6, 7, 8, 9, 10]
        assert cache.stats.window_evictions == 0
        cache.rows(0, torch.tensor([11, 12, 13, 14]))  # token 6: the window (8..10 + these) cannot fit
        assert cache.stats.window_evictions == 1 and len(cache.resident_neurons(0)) == 6


def test_too_small_a_cap_and_bad_requests_are_one_line(bundle, capsys):
    _, folder = bundle
    with BundleReader(folder / "ffn.bin") as reader:
        code = run_cli(lambda argv: NeuronCache(reader, INDEX + PER_SLOT - 1) and 0, [])
        assert_error_output(code, capsys.readouterr().err, "holds no neuron")
        cache = NeuronCache(reader, INDEX + 4 * PER_SLOT)
        code = run_cli(lambda argv: cache.rows(1, torch.arange(5)) and 0, [])
        assert_error_output(code, capsys.readouterr().err, "layer 1 asks for 5 neurons", "holds 4")
        with pytest.raises(CacheCapacityError, match=r"neuron ids must lie in \[0, 24\)"):
            cache.rows(0, torch.tensor([24]))
    with BundleReader(folder / "split.bin") as reader, pytest.raises(BundleError, match="needs a bundled file"):
        NeuronCache(reader, 10**6)


@pytest.mark.parametrize("layout", ["split", "bundled"])
def test_naive_loader_reads_three_parts_per_neuron_every_token(bundle, layout):
    model, folder = bundle
    with BundleReader(folder / ("split.bin" if layout == "split" else "ffn.bin")) as reader:
        naive = NaiveNeuronLoader(reader)
        assert (naive.ffn_dim(1), naive.bytes_per_neuron(1)) == (40, RECORD)
        for _ in range(2):
            ids = torch.tensor([7, 3, 39, 4])
            gate_up, down = naive.rows(1, ids)
            expected_gate_up, expected_down = dense_rows(model, 1, ids)
            assert torch.equal(gate_up, expected_gate_up) and torch.equal(down, expected_down)
        summary = naive.stats.summary()
    assert (summary["tokens"], summary["reads_issued"], summary["bytes_read"]) == (2, 24, 8 * RECORD)
    assert summary["mean_read_bytes"] == RECORD / 3 and summary["hits"] == 0


def test_victims_are_always_the_least_recently_used_slots(bundle):
    """The victim queue (built now and then, served over several calls) gives what a fresh sort would."""
    _, folder = bundle
    generator = np.random.default_rng(0)
    with BundleReader(folder / "ffn.bin") as reader:
        cache = NeuronCache(reader, INDEX + 64 * PER_SLOT)
        assert cache.num_slots == 64
        cache.slot_step[:] = generator.permutation(64)  # distinct steps: one right answer
        step = 64
        rebuilt = 0
        for _ in range(300):
            for slot in generator.choice(64, int(generator.integers(0, 6)), replace=False):  # slots used since
                step += 1
                cache.slot_step[slot] = step
            count = int(generator.integers(1, 12))
            expected = np.sort(np.argsort(cache.slot_step)[:count])
            position = cache.queue_position
            victims = cache._victims(count)
            rebuilt += cache.queue_position <= position
            assert np.array_equal(np.sort(victims), expected)
            for slot in victims:  # what a load does: the victims now hold this step's neurons
                step += 1
                cache.slot_step[slot] = step
        assert 0 < rebuilt < 300  # the queue was both rebuilt and served from
