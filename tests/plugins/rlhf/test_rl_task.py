"""The rl task on the engine: tiny PPO / RLOO / GRPO runs from an SFT run through toolkit-train's
entry point (KL to an identical reference and to the SFT model exactly 0 at step 0, the logged
figures, the time split), a non-finite reward skips the step untrained, and a reference of another
architecture or a prompt longer than the context is one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import TINY, tiny_openelm, write_run
from helpers import REPO
from plugins.openelm import OpenELMConfig
from plugins.rlhf import bench_rl, rl_task, soup_cli
from toolkit.assembly import assemble
from toolkit.checkpoint import load_weights
from toolkit.cli.common import run_cli
from toolkit.cli.train import main_with_arguments
from toolkit.engine.trainer import Trainer
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe

SALSA = str(REPO / "plugins" / "rlhf" / "recipes" / "salsa.yaml")


@pytest.fixture(scope="module")
def self_soup(sft_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("soup") / "soup"
    assert run_cli(soup_cli.run, [str(sft_run), str(sft_run), "--out", str(out)]) == 0
    return out


def rl_overrides(sft_run, gsm_dir, reference, out, *extra):
    return [f"models.policy.source={sft_run}", f"models.sft.source={sft_run}", f"models.value.init_from={sft_run}",
            f"models.reference.source={reference}", f"data.tokenizer={sft_run / 'tokenizer.model'}",
            f"data.train_file={gsm_dir / 'train.jsonl'}", f"data.val_file={gsm_dir / 'val.jsonl'}",
            "data.batch_size=2", "task.samples_per_prompt=2", "task.max_new_tokens=4", "task.epochs=1",
            "task.minibatches=2", "trainer.max_steps=2", "trainer.eval_every=2", "trainer.eval_batches=1",
            "trainer.save_every=2", "trainer.progress=false", "optim.lr=1e-2", f"trainer.out_dir={out}", *extra]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Length:
    """A reward that varies from sample to sample even for an untrained policy (math_answer gives it 0)."""

    def score(self, samples):
        return [len(sample.completion) / 10 for sample in samples]


def rl_run(run, sft_run, gsm_dir, self_soup, *extra):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rl_task, "build_reward", lambda name, options: (Length(), "tests"))
        assert main_with_arguments([SALSA, *rl_overrides(sft_run, gsm_dir, self_soup, run, *extra)]) == 0
    return run


CHECKPOINT_EACH_STEP = ["trainer.save_every=1", "trainer.keep_last=2"]


@pytest.fixture(scope="module")
def ppo_run(sft_run, gsm_dir, self_soup, tmp_path_factory):
    """Two PPO steps with the soup of the SFT run with itself as reference, a checkpoint after each."""
    return rl_run(tmp_path_factory.mktemp("ppo") / "run", sft_run, gsm_dir, self_soup, *CHECKPOINT_EACH_STEP)


@pytest.mark.parametrize("method", ["ppo", "grpo"])  # rloo differs from grpo only in rloo(), tested by hand
def test_rl_runs_with_a_soup_reference_and_kl_is_zero_at_step_zero(sft_run, gsm_dir, self_soup, tmp_path, method,
                                                                    request, capsys):
    if method == "ppo":
        run = request.getfixturevalue("ppo_run")
    else:
        run = rl_run(tmp_path / "rl", sft_run, gsm_dir, self_soup, f"task.method={method}", "models.value=null")
    steps = [r for r in records(run) if "reward" in r]
    assert len(steps) == 2
    # The policy, the SFT model and the soup of the SFT run with itself are one model at step 0.
    assert steps[0]["kl_ref"] == 0.0 and steps[0]["kl_sft"] == 0.0
    assert steps[1]["kl_sft"] != 0.0 and steps[1]["kl_ref"] == pytest.approx(steps[1]["kl_sft"], rel=1e-5)
    split = {"score_reward_s", "score_policy_s", "score_reference_s", "score_value_s"}
    assert {"generate_s", "score_s", "update_s", "response_tokens", "kl_coef", "policy_loss", *split} <= set(steps[0])
    assert steps[0]["score_s"] == pytest.approx(sum(steps[0][name] for name in split), rel=1e-12)
    assert ("value_loss" in steps[0]) == (method == "ppo")
    assert any("val_reward" in r for r in records(run))
    assert (run / "tokenizer.model").read_bytes() == (sft_run / "tokenizer.model").read_bytes()
    expected = ["model-policy.safetensors"] + (["model-value.safetensors"] if method == "ppo" else [])
    assert sorted(p.name for p in (run / "step-000002").glob("model-*")) == expected
    if method == "ppo":  # two trained models: toolkit-soup --model takes the policy out as a run of its own
        assert run_cli(soup_cli.run, [str(run), "--out", str(tmp_path / "policy")]) == 2
        assert "names 2 trained models (policy, value); say which with --model" in capsys.readouterr().err
        assert run_cli(soup_cli.run, [str(run), "--model", "policy", "--out", str(tmp_path / "policy")]) == 0
        policy = load_weights(run / "step-000002" / "model-policy.safetensors")
        alone = load_weights(tmp_path / "policy" / "step-000000" / "model.safetensors")
        assert all(torch.equal(policy[key], alone[key]) for key in policy)


class NotANumber:
    def score(self, samples):
        return [float("nan")] + [1.0] * (len(samples) - 1)


def test_a_non_finite_reward_skips_the_step_and_is_reported(sft_run, gsm_dir, self_soup, tmp_path, capsys):
    run = tmp_path / "rl"
    overrides = rl_overrides(sft_run, gsm_dir, self_soup, run, "trainer.max_steps=1", "trainer.eval_every=0",
                             "trainer.save_every=1")
    parts = assemble(load_recipe(SALSA, overrides, get_registries()))
    parts.task.reward = NotANumber()
    trainer = Trainer(parts)
    try:
        trainer.fit()
    finally:
        trainer.close()
    assert "reward 'math_answer' gave non-finite scores for samples [0]; the step is skipped" in capsys.readouterr().err
    step = records(run)[0]
    assert step["reward_nonfinite"] == 1 and "reward" not in step
    before = load_weights(sft_run / "step-000002" / "model-policy.safetensors")
    after = load_weights(run / "step-000001" / "model-policy.safetensors")
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_a_reference_of_another_architecture_is_one_line(sft_run, gsm_dir, tmp_path, capsys, tokenizer_path):
    config = OpenELMConfig(**{**TINY, "model_dim": 48})
    wide = write_run(tmp_path / "wide", type(tiny_openelm())(config),
                     {"model": {"name": "openelm", **dataclasses.asdict(config)}}, tokenizer_path)
    code = run_cli(main_with_arguments, [SALSA, *rl_overrides(sft_run, gsm_dir, wide, tmp_path / "rl")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, errors
    assert "models.reference: not the policy's architecture (differs in model_dim)" in errors[0]


def test_a_prompt_longer_than_the_context_is_one_line(sft_run, gsm_dir, self_soup, tmp_path, capsys):
    code = run_cli(main_with_arguments, [SALSA, *rl_overrides(sft_run, gsm_dir, self_soup, tmp_path / "rl",
                                                              "task.max_new_tokens=500")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, errors
    assert "with task.max_new_tokens=500 it exceeds the policy's context of 512 tokens" in errors[0]


def test_a_resumed_ppo_run_matches_an_uninterrupted_one_bit_for_bit(ppo_run, sft_run, gsm_dir, self_soup, tmp_path):
    resumed = rl_run(tmp_path / "resumed", sft_run, gsm_dir, self_soup, *CHECKPOINT_EACH_STEP,
                     "--resume", str(ppo_run / "step-000001"), "--accept-changes")
    for name in ("model-policy.safetensors", "model-value.safetensors"):
        expected, actual = load_weights(ppo_run / "step-000002" / name), load_weights(resumed / "step-000002" / name)
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    rewards = {run: [(r["step"], r["reward"], r["kl_sft"]) for r in records(run) if "reward" in r]
               for run in (ppo_run, resumed)}
    assert len(rewards[ppo_run]) == 2 and rewards[resumed] == rewards[ppo_run][1:]  # a fresh log from step 2 on


def test_generate_and_eval_pick_one_model_of_an_rl_run_with_model_name(ppo_run, gsm_dir, tmp_path, capsys):
    from plugins.lm import generate_cli
    from toolkit.cli import eval as eval_cli

    prompt = ["--prompt", "Q:", "--max-new-tokens", "3", "--temperature", "0"]
    assert run_cli(generate_cli.run, [str(ppo_run), *prompt]) == 2
    assert "names 2 trained models; say which" in capsys.readouterr().err
    assert run_cli(generate_cli.run, [str(ppo_run), "--model-name", "nope", *prompt]) == 2
    assert "has no model 'nope'" in capsys.readouterr().err
    assert run_cli(generate_cli.run, [str(ppo_run), "--model-name", "policy", *prompt]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    arguments = ["gsm_symbolic", "--model", str(ppo_run), "--model-name", "policy", "--output", str(out), "--limit", "1",
                 "--no-progress", f"data_file={gsm_dir / 'heldout.jsonl'}", "num_shots=0", "max_new_tokens=3"]
    assert run_cli(eval_cli.main_with_arguments, arguments) == 0
    fingerprint = json.loads((out / "results.json").read_text())
    assert str(fingerprint).count("step-000002#policy") >= 1  # the picked model is part of the cache's key
    assert eval_cli.default_output("gsm_symbolic", str(ppo_run), "policy").name.startswith("gsm_symbolic-run-policy-")
    assert run_cli(generate_cli.run, ["--model", str(gsm_dir / "train.jsonl"), "--model-name", "policy", *prompt]) == 2
    assert "--model-name picks one model of a toolkit run" in capsys.readouterr().err


ADAPTIVE = ["task.kl_target=1.0", "task.kl_horizon=4"]  # 4 samples a step: the coefficient moves its full 20%


def test_a_resumed_adaptive_kl_run_matches_an_uninterrupted_one_bit_for_bit(sft_run, gsm_dir, self_soup, tmp_path):
    whole = rl_run(tmp_path / "whole", sft_run, gsm_dir, self_soup, *CHECKPOINT_EACH_STEP, *ADAPTIVE)
    # Step 1's KL to the reference (the policy itself) is 0, far below the target: the coefficient
    # shrinks by the full clipped step, and the checkpoint keeps it.
    adapted = 0.05 * (1.0 + -0.2 * 4 / 4)
    state = json.loads((whole / "step-000001" / "task_state.json").read_text())
    assert state == {"kl_controller": {"coef": adapted}}
    resumed = rl_run(tmp_path / "resumed", sft_run, gsm_dir, self_soup, *CHECKPOINT_EACH_STEP, *ADAPTIVE,
                     "--resume", str(whole / "step-000001"), "--accept-changes")
    figures = ("step", "reward", "kl_sft", "kl_ref", "kl_coef", "policy_loss", "value_loss")
    steps = {run: [tuple(r[key] for key in figures) for r in records(run) if "reward" in r] for run in (whole, resumed)}
    assert [step[4] for step in steps[whole]] == [0.05, adapted]
    assert steps[resumed] == steps[whole][1:]  # step 2 exactly as the uninterrupted run had it
    assert steps[whole][1][3] != 0.0  # the coefficient acted on step 2's penalty
    for name in ("model-policy.safetensors", "model-value.safetensors"):
        expected, actual = load_weights(whole / "step-000002" / name), load_weights(resumed / "step-000002" / name)
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    assert (resumed / "step-000002" / "task_state.json").read_text() == (whole / "step-000002" / "task_state.json").read_text()


def test_frozen_references_hold_no_optimizer_state_and_a_soup_costs_what_one_model_costs(sft_run, gsm_dir, self_soup,
                                                                                          tmp_path):
    result = bench_rl.run_configuration(SALSA, rl_overrides(sft_run, gsm_dir, self_soup, tmp_path / "rl"), steps=2)
    memory = result["memory"]
    parameters = sum(p.numel() for p in tiny_openelm().parameters()) * 4  # fp32
    tensors = len(list(tiny_openelm().parameters()))
    assert {name: m["role"] for name, m in memory.items()} == {"policy": "trained", "sft": "frozen",
                                                               "reference": "frozen", "value": "trained"}
    for name in ("sft", "reference"):  # inference only: not in the optimizer, no gradients, no state
        assert memory[name]["in_optimizer"] == memory[name]["requires_grad"] == 0
        assert memory[name]["optimizer_bytes"] == memory[name]["gradient_bytes"] == 0
        assert memory[name]["parameter_bytes"] == parameters  # the soup is one model's weights, not two
    # AdamW: two moments per parameter and a 4-byte step count per tensor.
    assert memory["policy"]["optimizer_bytes"] == 2 * parameters + 4 * tensors
    assert set(result["time_s"]) == set(bench_rl.PARTS)


@pytest.mark.parametrize("recipe", ["sft_a", "sft_b", "reward", "ppo", "salsa"])
def test_the_shipped_recipes_are_valid(recipe):
    load_recipe(f"rlhf/{recipe}.yaml", [], get_registries())


def test_model_name_for_an_evaluator_that_takes_none_is_one_line(tmp_path, capsys):
    from toolkit.cli import eval as eval_cli

    code = run_cli(eval_cli.main_with_arguments, ["linear_probe", "--model", str(tmp_path), "--model-name", "policy",
                                                  "--output", str(tmp_path / "out")])
    assert code == 2 and capsys.readouterr().err.startswith("error: evaluator 'linear_probe' takes no --model-name")
    assert not (tmp_path / "out").exists()
