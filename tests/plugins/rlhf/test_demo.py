"""The demonstration's own parts: the easy templates generate problems whose reference is the
arithmetic of their numbers, held-out templates stay out of training, and the soup check stops
the demo with one line when the soup is worse than the worse SFT run."""

from __future__ import annotations

import json
import operator
import sys

import pytest

from plugins.rlhf import demo, gsm_data
from toolkit.cli.common import run_cli
from toolkit.errors import ToolkitError

OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def test_the_easy_templates_give_one_step_problems_with_the_right_answers(tmp_path):
    assert gsm_data.run(["--out", str(tmp_path), "--templates", str(demo.EASY_TEMPLATES), "--heldout", "8",
                         "--instances", "3", "--heldout-instances", "2"]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(split["train_templates"]) == 24 and len(split["heldout_templates"]) == 8
    rows = {name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "heldout")}
    assert {row["id"] for row in rows["train"]} == set(split["train_templates"])
    assert {row["id"] for row in rows["heldout"]} == set(split["heldout_templates"])
    assert len(rows["train"]) == 72 and len(rows["heldout"]) == 16
    for row in rows["train"] + rows["heldout"]:
        first, second = row["values"]["a"], row["values"]["b"]
        sign = next(sign for sign in OPERATIONS if f"{first} {sign} {second} = " in row["response"])
        answer = OPERATIONS[sign](first, second)
        # Small numbers on purpose: a model of a few hundred thousand parameters must be able to
        # learn their arithmetic in minutes (docs/RLHF.md), and the response is only that arithmetic.
        assert 2 <= second <= 9 and first <= 18 and 0 < answer <= 25 and row["reference"] == str(answer), row
        assert row["response"] == f"{first} {sign} {second} = {answer}. The final answer is {answer}.", row


def sweep(*losses):
    return [{"alpha": alpha, "val_loss": loss, "items": 10} for alpha, loss in zip((0.0, 0.25, 0.5, 0.75, 1.0), losses)]


def test_a_soup_no_worse_than_the_worse_endpoint_passes_and_a_worse_one_is_one_line(capsys):
    demo.check_soup(sweep(1.0, 0.9, 1.2, 0.9, 1.2))  # equal to the worse endpoint: fine
    demo.check_soup(sweep(1.0, 0.9, 0.8, 0.9, 1.2))
    with pytest.raises(demo.SoupCheckFailed) as error:
        demo.check_soup(sweep(1.0, 1.1, 1.3, 1.1, 1.2))
    assert error.value.message == ("the soup's validation loss 1.3000 is worse than the worse SFT run's 1.2000; "
                                   "a reference made from it would not be a soup of good models")
    assert run_cli(lambda argv: demo.check_soup(sweep(1.0, 1.0, float("nan"), 1.0, 1.0)), []) == 2
    assert capsys.readouterr().err.startswith("error: the soup's validation loss nan is worse")


def test_the_plotted_curves_are_moving_averages():
    assert demo.moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_stages_run_side_by_side_in_order_and_a_failed_one_is_one_line_quoting_its_error(tmp_path):
    assert demo.run_jobs(2, [lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    assert demo.run_jobs(1, [lambda: "serial"]) == ["serial"]
    failing = [sys.executable, "-c", "import sys; print('step 1'); print('error: data.train_file: not found'); sys.exit(2)"]
    with pytest.raises(ToolkitError) as error:
        demo.run_jobs(2, [lambda: None, lambda: demo.run_logged(failing, tmp_path / "sft-a.log", "training sft-a")])
    log = tmp_path / "sft-a.log"
    assert error.value.message == (f"training sft-a failed (error: data.train_file: not found; the whole output "
                                   f"is in {log})")
    assert log.read_text() == "step 1\nerror: data.train_file: not found\n"
