"""The duo_analysis evaluator's numbers agree with direct scoring, and its figure is a PNG."""

from __future__ import annotations

import pytest
import torch

from plugins.duo.analysis import DuoAnalysisConfig, analyze, figure_png
from plugins.duo.oracle import score_patterns
from plugins.duo.routers import BIG, SMALL

from duo_models import tiny_duo


def test_analysis_matches_direct_scoring_and_orders_the_routings():
    generator = torch.Generator().manual_seed(6)
    input_ids = torch.randint(0, 64, (2, 9), generator=generator)
    labels = torch.randint(0, 64, (2, 9), generator=generator)
    model = tiny_duo("fixed", pattern=["big", "small", "big"])
    metrics = analyze(model, input_ids, labels, DuoAnalysisConfig(random_patterns=5, precision="float32"))
    direct = score_patterns(model, input_ids, labels, torch.tensor([[BIG] * 3, [SMALL] * 3, [BIG, SMALL, BIG]]))
    assert metrics["all_big"] == pytest.approx(float(direct[0].mean()), rel=1e-5)
    assert metrics["all_small"] == pytest.approx(float(direct[1].mean()), rel=1e-5)
    assert metrics["own_router"] == pytest.approx(float(direct[2].mean()), rel=1e-5)
    assert metrics["own_router_big_share"] == pytest.approx(2 / 3)
    top = metrics["budgets"][-1]
    assert top["oracle_token"] <= top["oracle_sequence"] <= top["oracle_corpus"] <= metrics["all_big"] + 1e-6
    assert top["oracle_corpus"] <= top["best_of_random"]
    assert metrics["budgets"][0]["oracle_corpus"] <= metrics["all_small"] + 1e-6
    assert metrics["token_difficulty"] >= 0 and len(top["big_layers_by_position"]) == 9
    assert figure_png(metrics)[:8] == b"\x89PNG\r\n\x1a\n"
