"""The Duo plugin: Duo-LLM (Alizadeh et al., 2024) on OpenELM, with routers as a component kind.

Registers
    routers `random`, `fixed`, `learned`, `oracle`   per token and layer: big FFN, small FFN or
                                   skip (plugins.duo.routers)
    models  `duo-openelm`, `duo-openelm-tiny`  OpenELM blocks with a small FFN beside each big one,
                                   routed by one of the routers (plugins.duo.model)
    task    `duo_lm`               causal LM loss plus the router's budget loss (plugins.duo.task)
    evaluator `duo_analysis`       loss per budget: oracle, best-of-N random, all-small, all-big,
                                   the model's own router; a PNG (plugins.duo.analysis)
    recipes under `duo/`           `duo/tiny.yaml`: random-routing training on the built-in corpus
                                   `duo/learned.yaml`: a learned router trained jointly
                                   `duo/routers.yaml`: learned routers on a frozen duo/tiny run

and provides `python -m plugins.duo.oracle` (exhaustive or beam search over routing patterns
under budgets of big-FFN uses, best patterns saved as JSON).
"""

from __future__ import annotations

from pathlib import Path

from plugins.duo.analysis import DuoAnalysisConfig, build_duo_analysis
from plugins.duo.model import DuoConfig, DuoOpenELM, DuoTinyConfig, build_duo_openelm
from plugins.duo.routers import (
    FixedRouterConfig,
    LearnedRouterConfig,
    OracleRouterConfig,
    RandomRouterConfig,
    build_fixed,
    build_learned,
    build_oracle,
    build_random,
)
from plugins.duo.task import DuoLMConfig, build_duo_lm
from toolkit import hookimpl

__all__ = ["DuoConfig", "DuoOpenELM", "DuoTinyConfig", "build_duo_openelm"]

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data


@hookimpl
def register_routers(register):
    register("random", build_random, config=RandomRouterConfig)
    register("fixed", build_fixed, config=FixedRouterConfig)
    register("learned", build_learned, config=LearnedRouterConfig)
    register("oracle", build_oracle, config=OracleRouterConfig)


@hookimpl
def register_models(register):
    register("duo-openelm", build_duo_openelm, config=DuoConfig)
    register("duo-openelm-tiny", build_duo_openelm, config=DuoTinyConfig)


@hookimpl
def register_tasks(register):
    register("duo_lm", build_duo_lm, config=DuoLMConfig)


@hookimpl
def register_evaluators(register):
    register("duo_analysis", build_duo_analysis, config=DuoAnalysisConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="duo")
