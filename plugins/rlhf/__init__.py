"""The RLHF plugin: supervised fine-tuning, model soups and rewards, toward SALSA (PPO whose KL
reference is a soup of SFT runs).

Registers
    dataset `prompt_response`  prompt/response JSONL, response-only labels, packing without
                               cross-example attention (plugins.rlhf.sft_data)
    task    `sft`              response-only cross-entropy of a `policy` model (plugins.rlhf.sft)
    reward  `math_answer`      the exact final number of a math word problem (plugins.rlhf.rewards)
    model   `reward_openelm`, dataset `preference_pairs`, task and reward `reward_model`: a learned
                               reward, Bradley-Terry on preference pairs (plugins.rlhf.reward_model)
    dataset `prompts`, task `rl`  PPO / RLOO / GRPO with a pluggable KL reference (the SFT model, a
                               soup, any checkpoint, none): SALSA's ingredients (plugins.rlhf.rl_task)
    recipes under `rlhf/`      two SFT runs of one base differing only in seed (data order), a
                               reward model, PPO with the SFT reference and SALSA with a soup reference

and provides `toolkit-soup` (weight averages of runs, an alpha sweep: plugins.rlhf.soup_cli) and
`python -m plugins.rlhf.gsm_data` (SFT data from the GSM-Symbolic templates, held-out templates
kept apart).
"""

from __future__ import annotations

from pathlib import Path

from plugins.rlhf.reward_model import (
    LearnedRewardConfig,
    PreferencePairsConfig,
    RewardModelConfig,
    RewardModelTaskConfig,
    build_learned_reward,
    build_preference_pairs,
    build_reward_model,
    build_reward_model_task,
)
from plugins.rlhf.rewards import MathAnswerConfig, build_math_answer
from plugins.rlhf.rl_data import PromptsConfig, build_prompts
from plugins.rlhf.rl_task import RLConfig, build_rl
from plugins.rlhf.sft import SFTConfig, build_sft
from plugins.rlhf.sft_data import PromptResponseConfig, build_prompt_response
from toolkit import hookimpl

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data


@hookimpl
def register_models(register):
    register("reward_openelm", build_reward_model, config=RewardModelConfig)


@hookimpl
def register_datasets(register):
    register("prompt_response", build_prompt_response, config=PromptResponseConfig)
    register("preference_pairs", build_preference_pairs, config=PreferencePairsConfig)
    register("prompts", build_prompts, config=PromptsConfig)


@hookimpl
def register_tasks(register):
    register("sft", build_sft, config=SFTConfig)
    register("reward_model", build_reward_model_task, config=RewardModelTaskConfig)
    register("rl", build_rl, config=RLConfig)


@hookimpl
def register_rewards(register):
    register("math_answer", build_math_answer, config=MathAnswerConfig)
    register("reward_model", build_learned_reward, config=LearnedRewardConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="rlhf")
