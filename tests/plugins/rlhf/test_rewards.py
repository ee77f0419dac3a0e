"""Rewards: the component kind (listed by toolkit-plugins), the exact final-number reward, the checked
call (a raising plugin is one line naming it, non-finite scores are reported), and the learned
reward model (Bradley-Terry loss by hand, scores read at the last real token, a short training
run from an SFT run through toolkit-train and scoring with the result)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_openelm
from plugins.rlhf.reward_model import (
    LearnedReward,
    LearnedRewardConfig,
    RewardModel,
    RewardModelTask,
    right_padded,
)
from plugins.rlhf.rewards import MathAnswerReward, RewardError, Sample, final_number, score_samples
from toolkit.checkpoint import load_model
from toolkit.cli.common import run_cli
from toolkit.cli.plugins import describe
from toolkit.cli.train import main_with_arguments


def test_rewards_are_a_component_kind_listed_by_toolkit_plugins():
    rows = {row["name"]: row["registers"] for row in describe()}
    assert rows["rlhf"]["rewards"] == ["math_answer", "reward_model"]


@pytest.mark.parametrize(("completion", "reference", "expected"), [
    (" He has 3 + 4 = 7. The final answer is 7.", "7", 1.0),
    (" He has 3 + 4 = 7. The final answer is 8. Then 7", "7", 0.0),  # the stated answer counts, not the last number
    (" 3 + 4 = 7 apples", "7", 1.0),  # no final sentence: the last number
    (" The final answer is 1,250.", "1250", 1.0),
    (" The final answer is 7.5", "7", 0.0),
    (" I do not know.", "7", 0.0),
])
def test_math_answer_rewards_the_exact_final_number(completion, reference, expected):
    assert MathAnswerReward().score([Sample("q", completion, reference)]) == [expected]


def test_final_number_reads_the_last_final_answer_sentence():
    assert final_number("The final answer is 3. Q: The final answer is 12.\nmore 5") == 12.0
    assert final_number("nothing here") is None


class Boom:
    def score(self, samples):
        raise RuntimeError("kaput\nsecond line")


class Fixed:
    def __init__(self, values):
        self.values = values

    def score(self, samples):
        return self.values


def test_a_raising_reward_is_one_line_naming_it_and_its_plugin(capsys):
    samples = [Sample("q", "a", "1")] * 3

    def command(argv):
        score_samples("boom", "someplugin", Boom(), samples)
        return 0

    assert run_cli(command, []) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: reward 'boom' (plugin 'someplugin') failed: RuntimeError: kaput second line"]
    with pytest.raises(RewardError, match="returned 2 scores for 3 samples"):
        score_samples("short", "p", Fixed([1.0, 2.0]), samples)


def test_non_finite_scores_are_reported_by_position():
    samples = [Sample("q", "a", "1")] * 4
    scores = score_samples("odd", "p", Fixed([1.0, float("nan"), 0.5, float("-inf")]), samples)
    assert not scores.finite and scores.bad == [1, 3]
    assert score_samples("fine", "p", Fixed(torch.tensor([1.0, 0.0, 2.0, 3.0])), samples).values.tolist() == [
        1.0, 0.0, 2.0, 3.0]


def test_the_bradley_terry_loss_by_hand_with_padding_pairs_left_out():
    model = RewardModel(tiny_openelm()).eval()
    torch.manual_seed(2)
    chosen, chosen_last = right_padded([[2, 5, 6, 2], [2, 9, 2], [2, 3, 2]], 6)
    rejected, rejected_last = right_padded([[2, 5, 7, 2], [2, 8, 8, 8, 2], [2, 4, 2]], 6)
    batch = {"chosen_ids": torch.from_numpy(chosen), "chosen_last": torch.from_numpy(chosen_last),
             "rejected_ids": torch.from_numpy(rejected), "rejected_last": torch.from_numpy(rejected_last),
             "valid": torch.tensor([1, 1, 0])}
    task = RewardModelTask()
    assert task.training_step(model, batch).loss.item() == pytest.approx(math.log(2), abs=1e-7)  # zero head
    torch.nn.init.normal_(model.score_head.weight)
    output = task.training_step(model, batch)
    scores_chosen = model(batch["chosen_ids"], batch["chosen_last"])[:2]
    scores_rejected = model(batch["rejected_ids"], batch["rejected_last"])[:2]
    margin = scores_chosen - scores_rejected
    torch.testing.assert_close(output.loss, -F.logsigmoid(margin).mean())
    assert output.items == 2 and output.metrics["pair_accuracy"].item() == (margin > 0).float().mean().item()
    # A score is read at the row's last real token: more padding after it changes nothing.
    wider, _ = right_padded([[2, 5, 6, 2]], 12)
    torch.testing.assert_close(model(torch.from_numpy(wider), torch.tensor([3])), scores_chosen[:1],
                               atol=1e-5, rtol=1e-5)


def test_a_reward_model_trains_from_an_sft_run_and_scores_samples(sft_run, gsm_dir, tmp_path):
    run = tmp_path / "reward"
    overrides = [f"model.init_from={sft_run}", f"data.train_file={gsm_dir / 'pairs_train.jsonl'}",
                 f"data.val_file={gsm_dir / 'pairs_val.jsonl'}", f"data.tokenizer={sft_run / 'tokenizer.model'}",
                 "data.seq_len=384", "data.batch_size=2", "trainer.max_steps=2", "trainer.eval_every=2",
                 "trainer.eval_batches=1", "trainer.save_every=2", "trainer.progress=false", "trainer.log_every=1",
                 "trainer.precision=fp32", "schedule.warmup_steps=1", f"trainer.out_dir={run}"]
    assert main_with_arguments(["rlhf/reward.yaml", *overrides]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # the zero head prefers neither
    assert {"pair_accuracy", "margin"} <= set(records[0]) and any("val_loss" in r for r in records)
    assert isinstance(load_model(run).model, RewardModel)
    reward = LearnedReward(LearnedRewardConfig(run=str(run), template="gsm"))
    samples = [Sample("Tom has 3 apples.", " The final answer is 3."), Sample("x", " The final answer is 4.")]
    scores = score_samples("reward_model", "rlhf", reward, samples)
    assert scores.finite and scores.values.shape == (2,)
    alone = score_samples("reward_model", "rlhf", reward, samples[:1]).values
    torch.testing.assert_close(alone, scores.values[:1], atol=1e-5, rtol=1e-5)  # batching does not change a score
