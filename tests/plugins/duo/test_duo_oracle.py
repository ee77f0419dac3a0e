"""The oracle: tree-batched scoring equals one forward per pattern; its bests are the brute-force bests."""

from __future__ import annotations

import pytest
import torch

from plugins.duo.oracle import (
    OracleSearchConfig,
    all_patterns,
    pattern_names,
    score_patterns,
    search,
)
from plugins.duo.routers import BIG, make_router

from duo_models import tiny_duo


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(0, 64, (3, 10), generator=generator)
    labels = torch.randint(0, 64, (3, 10), generator=generator)
    labels[2, :3] = -100  # ignored targets count for nothing
    return input_ids, labels


@pytest.mark.parametrize("allow_skip", [True, False])
def test_tree_batched_scoring_equals_scoring_patterns_one_at_a_time(data, allow_skip):
    input_ids, labels = data
    model = tiny_duo()
    config = OracleSearchConfig(allow_skip=allow_skip, chunk_sequences=2, max_rows=5, max_head_tokens=50)
    result = search(model, input_ids, labels, config)
    patterns = all_patterns(3, allow_skip)
    assert result.num_patterns == (27 if allow_skip else 8) and torch.equal(result.patterns, patterns)
    one_at_a_time = score_patterns(model, input_ids, labels, patterns)
    torch.testing.assert_close(result.token_losses, one_at_a_time, rtol=1e-5, atol=1e-5)
    assert (result.token_losses[:, 2, :3] == 0).all()


def test_best_patterns_are_the_brute_force_bests(data):
    input_ids, labels = data
    model = tiny_duo()
    result = search(model, input_ids, labels, OracleSearchConfig())
    patterns = all_patterns(3, True)
    brute = score_patterns(model, input_ids, labels, patterns)  # [27, N, S]
    keep = (labels != -100).float()
    for entry in result.budgets:
        allowed = [p for p in range(27) if int((patterns[p] == BIG).sum()) <= entry["max_big"]]
        corpus = {p: float(brute[p].sum() / keep.sum()) for p in allowed}
        best = min(corpus, key=corpus.get)
        assert entry["best_pattern"] == pattern_names(patterns[best])
        assert entry["loss"] == pytest.approx(corpus[best], rel=1e-5)
        for row in range(3):
            per_sequence = {p: float(brute[p, row].sum() / keep[row].sum()) for p in allowed}
            assert entry["sequence_patterns"][row] == pattern_names(patterns[min(per_sequence, key=per_sequence.get)])
        token_best = torch.stack([brute[p] for p in allowed]).min(dim=0).values
        assert entry["token_oracle_loss"] == pytest.approx(float(token_best.sum() / keep.sum()), rel=1e-5)
    assert result.budgets[0]["best_pattern"].count("big") == 0
    losses = [entry["loss"] for entry in result.budgets]
    assert losses == sorted(losses, reverse=True)  # a larger budget never does worse


def test_full_width_beam_search_finds_the_exhaustive_best(data, tmp_path):
    input_ids, labels = data
    model = tiny_duo()
    exhaustive = search(model, input_ids, labels, OracleSearchConfig())
    beam = search(model, input_ids, labels, OracleSearchConfig(method="beam", beam_width=27))
    assert [e["best_pattern"] for e in beam.budgets] == [e["best_pattern"] for e in exhaustive.budgets]
    narrow = search(model, input_ids, labels, OracleSearchConfig(method="beam", beam_width=2))
    assert all(n["loss"] >= e["loss"] - 1e-6 for n, e in zip(narrow.budgets, exhaustive.budgets))
    # The oracle router applies the saved corpus pattern.
    saved = tmp_path / "oracle.json"
    saved.write_text(__import__("json").dumps(exhaustive.to_json()))
    router = make_router("oracle", {"patterns_file": str(saved), "max_big": 1}, 3)
    assert [int(code) for code in router.codes] == [["big", "small", "skip"].index(name)
                                                    for name in exhaustive.budgets[1]["best_pattern"]]
