"""The distill task: its loss by hand, and a frozen teacher + trained student through toolkit-train
(two shuffled updates per batch, the student alone checkpointed, bit-exact resume after SIGKILL,
bad model layouts refused before anything is written)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from helpers import REPO, assert_one_line_error, run_command
from plugins.distill.task import DistillConfig, DistillTask

RECIPE = str(REPO / "plugins" / "distill" / "recipes" / "tiny.yaml")
SMALL_DATA = ["data.seq_len=32", "data.batch_size=4", "trainer.eval_batches=2", "trainer.progress=false",
              "schedule.warmup_steps=2"]
TEACHER = ["openelm/tiny.yaml", "model.num_layers=2", "model.model_dim=64", "model.head_dim=16", *SMALL_DATA,
           "trainer.max_steps=3", "trainer.eval_every=0"]
STUDENT = ["models.student.num_layers=1", "models.student.model_dim=32", "models.student.head_dim=16",
           *SMALL_DATA, "trainer.eval_every=4", "trainer.log_every=1"]


class Bigram(nn.Module):
    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, input_ids):  # [B, S] -> [B, S, V]
        return self.table(input_ids)


def test_loss_is_the_weighted_sum_of_kl_and_cross_entropy():
    torch.manual_seed(0)
    student, teacher = Bigram(), Bigram()
    input_ids = torch.randint(0, 11, (3, 5))
    labels = input_ids.roll(-1, dims=1)
    labels[:, -1] = -100
    models = {"student": student, "teacher": teacher}
    temperature = 2.0
    s = student(input_ids)[:, :-1].reshape(-1, 11) / temperature
    t = teacher(input_ids)[:, :-1].reshape(-1, 11).detach() / temperature
    expected_kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean() * temperature**2
    expected_ce = F.cross_entropy(student(input_ids)[:, :-1].reshape(-1, 11), labels[:, :-1].reshape(-1))
    output = DistillTask(DistillConfig(temperature=temperature, alpha=0.25)).training_step(models, {
        "input_ids": input_ids, "labels": labels})
    assert output.items == 12 and output.sequence_length == 5
    torch.testing.assert_close(output.metrics["kl"], expected_kl.detach())
    torch.testing.assert_close(output.loss, 0.25 * expected_kl + 0.75 * expected_ce)
    output.loss.backward()
    assert student.table.weight.grad is not None and teacher.table.weight.grad is None
    same = DistillTask().training_step({"student": student, "teacher": student}, {"input_ids": input_ids,
                                                                                  "labels": labels})
    assert same.metrics["kl"].abs().item() < 1e-6  # a student that is the teacher has nothing to learn


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    result = run_command(["toolkit-train", *TEACHER, f"trainer.out_dir={run}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def distill_command(run: Path, teacher: Path, *extra: str) -> list[str]:
    return ["toolkit-train", RECIPE, *STUDENT, f"models.teacher.source={teacher}", f"trainer.out_dir={run}", *extra]


@pytest.mark.slow
def test_distillation_trains_the_student_only_and_resumes_exactly_after_sigkill(teacher_run, tmp_path):
    steps = ["trainer.max_steps=16", "trainer.save_every=2"]
    clean = run_command(distill_command(tmp_path / "clean", teacher_run, *steps))
    assert clean.returncode == 0, clean.stderr[-2000:]
    final = tmp_path / "clean" / "step-000016"
    assert sorted(p.name for p in final.iterdir()) == [
        "model-student.safetensors", "optimizer.pt", "recipe.yaml", "scheduler.json", "trainer_state.json"]
    records = metrics(tmp_path / "clean")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 16 and losses[-1] < losses[0]
    assert {"kl", "ce"} <= set(records[0]) and any("val_distill_loss" in r for r in records)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "toolkit.cli.train", *distill_command(killed, teacher_run, *steps)[1:]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(killed.glob("step-*"))) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = sorted(killed.glob("step-*"))
    assert checkpoints and checkpoints[-1].name != "step-000016", "the run finished before it could be killed"
    resumed = run_command([*distill_command(killed, teacher_run, *steps), "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(final / "model-student.safetensors")
    actual = load_file(killed / "step-000016" / "model-student.safetensors")
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    assert [r.get("loss", r.get("val_loss")) for r in metrics(killed)] == [
        r.get("loss", r.get("val_loss")) for r in records]


@pytest.mark.parametrize(("overrides", "fragments"), [
    (["models.teacher.frozen=false", "models.teacher.dtype=fp32"], ["models.teacher: task 'distill' uses it frozen", "optimizer"]),
    (["models.teacher=null"], ["task 'distill' needs a model 'teacher'"]),
    (["models.teacher.dtype=fp16"], ["models.teacher.dtype: 'fp16' is not fp32 or bf16"]),
    (["model.name=openelm"], ["has both 'model:' and 'models:'"]),
])
def test_bad_model_layouts_are_one_line_and_write_nothing(teacher_run, tmp_path, overrides, fragments):
    run = tmp_path / "run"
    result = run_command(distill_command(run, teacher_run, *overrides))
    assert_one_line_error(result, *fragments)
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one(teacher_run, tmp_path, strategy):
    """The student wrapped for DDP / sharded by FSDP2, the teacher frozen beside it on each rank:
    two updates per batch (two passes, whole batch each) give one process's losses."""
    sys.path.insert(0, str(REPO / "tests" / "toolkit"))
    from test_distributed import read_losses, torchrun

    common = ["task.epochs=2", "task.minibatches=1", "trainer.max_steps=6", "trainer.eval_every=3",
              "trainer.precision=fp32", "models.teacher.dtype=fp32"]  # bf16 rounding would differ by layout
    # eval_batches counts micro-batches: 2 of 8 rows on one rank, 2 of 4 rows on each of two.
    one = run_command(distill_command(tmp_path / "one", teacher_run, *common, "data.batch_size=8"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(None, *distill_command(tmp_path / "two", teacher_run, *common, "data.batch_size=4",
                                          "trainer.eval_batches=4", f"dist.strategy={strategy}")[1:])
    assert two.returncode == 0, two.stderr[-3000:]
    assert read_losses(tmp_path / "two") == pytest.approx(read_losses(tmp_path / "one"), rel=1e-4)
    first = load_file(tmp_path / "one" / "step-000006" / "model-student.safetensors")
    second = load_file(tmp_path / "two" / "step-000006" / "model-student.safetensors")
    assert all(torch.allclose(first[k], second[k], atol=1e-4) for k in first)
