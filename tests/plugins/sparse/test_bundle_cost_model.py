"""The flash benchmark's pieces: synthesized activation patterns, the page-cache probes, the cost model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugins.sparse.activation_patterns import load_recorded, overlap_statistics, synthesize
from plugins.sparse.cost_model import (
    drop_page_cache,
    estimate,
    make_scratch_file,
    measure_reads,
    page_residency,
)
from plugins.sparse.fetch_stats import FetchStats
from toolkit.errors import DataError


def test_synthesized_patterns_have_the_stated_sparsity_and_overlap():
    patterns = synthesize([50, 100], tokens=6, active_fraction=0.2, overlap=0.7, seed=1)
    assert len(patterns) == 6 and all(len(layers) == 2 for layers in patterns)
    for token in range(6):
        for layer, ffn_dim in enumerate((50, 100)):
            ids = patterns[token][layer]
            assert ids.numel() == round(0.2 * ffn_dim) and torch.equal(ids, torch.unique(ids))
            assert int(ids.min()) >= 0 and int(ids.max()) < ffn_dim
            if token:
                shared = set(ids.tolist()) & set(patterns[token - 1][layer].tolist())
                assert len(shared) == round(0.7 * ids.numel())  # exactly the stated overlap
    statistics = overlap_statistics(patterns, [50, 100], window=3)
    assert statistics["active_fraction"] == pytest.approx(0.2)
    assert statistics["overlap_previous"] == pytest.approx(0.7)
    assert statistics["overlap_window_3"] >= statistics["overlap_previous"]
    with pytest.raises(DataError, match="active fraction"):
        synthesize([40], 2, active_fraction=0.0, overlap=0.5)


def test_recorded_patterns_load_without_pickle_and_check_shapes(tmp_path):
    masks = np.zeros((3, 8), dtype=bool)
    masks[0, [1, 5]] = masks[1, [5, 6]] = masks[2, 0] = True
    np.savez(tmp_path / "patterns.npz", layer_0=masks)
    patterns = load_recorded(tmp_path / "patterns.npz", [8])
    assert [layers[0].tolist() for layers in patterns] == [[1, 5], [5, 6], [0]]
    with pytest.raises(DataError, match=r"layer_0 has shape \(3, 8\), expected \[tokens, 9\]"):
        load_recorded(tmp_path / "patterns.npz", [9])
    with pytest.raises(DataError, match="not an activation-pattern file"):
        load_recorded(tmp_path / "patterns.npz", [8, 8])


def test_dropping_the_page_cache_is_seen_by_mincore(tmp_path):
    scratch = make_scratch_file(tmp_path / "scratch.bin", 1 << 20)
    scratch.read_bytes()
    residency = page_residency(scratch)
    if residency is None:
        pytest.skip("mincore is not available here")
    assert residency == 1.0
    drop_page_cache(scratch)
    assert page_residency(scratch) < 0.5  # clean pages of a fsynced file go (all of them on Linux)


def test_measured_reads_and_the_estimate(tmp_path):
    scratch = make_scratch_file(tmp_path / "scratch.bin", 1 << 20)
    measurement = measure_reads(scratch, 4096, 50, "random", cold=False)
    assert (measurement.reads, measurement.read_bytes, measurement.cold) == (50, 4096, False)
    assert measurement.resident_after in (None, 1.0) or measurement.resident_after > 0
    sequential = measure_reads(scratch, 1 << 18, 50, "sequential", cold=True)
    assert sequential.reads == 4  # the file holds four such reads
    stats = FetchStats(tokens=4, bytes_read=4 * 3 * 4096, reads_issued=12, hits=10, misses=12)
    cost = estimate(stats.summary(), measurement)
    assert (cost.reads_per_token, cost.bytes_per_token, cost.mean_read_bytes) == (3, 3 * 4096, 4096)
    assert cost.seconds_per_token == pytest.approx(3 * measurement.seconds / 50)
    assert cost.tokens_per_second == pytest.approx(1 / cost.seconds_per_token) and cost.cached
