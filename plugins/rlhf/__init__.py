"""The RLHF plugin: supervised fine-tuning, model soups and rewards, toward SALSA (PPO whose KL
reference is a soup of SFT runs).

Registers
    dataset `prompt_response`  prompt/response JSONL, response-only labels, packing without
                               cross-example attention (plugins.rlhf.sft_data)
    task    `sft`              response-only cross-entropy of a `policy` model (plugins.rlhf.sft)
    recipes under `rlhf/`      two SFT runs of one base differing only in seed (data order)

and provides `toolkit-soup` (weight averages of runs, an alpha sweep: plugins.rlhf.soup_cli) and
`python -m plugins.rlhf.gsm_data` (SFT data from the GSM-Symbolic templates, held-out templates
kept apart).
"""

from __future__ import annotations

from pathlib import Path

from plugins.rlhf.sft import SFTConfig, build_sft
from plugins.rlhf.sft_data import PromptResponseConfig, build_prompt_response
from toolkit import hookimpl

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data


@hookimpl
def register_datasets(register):
    register("prompt_response", build_prompt_response, config=PromptResponseConfig)


@hookimpl
def register_tasks(register):
    register("sft", build_sft, config=SFTConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="rlhf")
