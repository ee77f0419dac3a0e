"""Apple's released sets as evaluation data: a JSONL of our own in their layout (every set of a
template together, `instance` numbering the sets, a `canary` field) is read as it comes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from plugins.gsm_symbolic.report import ORIGINAL_SET, load_symbolic_rows, summarize_symbolic
from toolkit.errors import DataError

CANARY = "This line is not for training corpora. canary of our own"


def apple_layout(path, templates: int = 3, sets: int = 4):
    rows = [{"id": template, "instance": instance, "question": f"Q{template}.{instance}: 2 + {instance}?",
             "answer": f"2 + {instance} = {2 + instance}\n#### {2 + instance}", "original_id": 100 + template,
             "original_question": f"Original {template}: 2 + 2?", "original_answer": "2 + 2 = 4\n#### 4", "canary": CANARY}
            for template in range(templates) for instance in range(sets)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def config(path, sets=0, original=True):
    return SimpleNamespace(data_file=str(path), sets=sets, original=original)


def test_every_set_of_the_file_by_default_and_the_originals_first(tmp_path):
    rows = load_symbolic_rows(config(apple_layout(tmp_path / "GSM_symbolic.jsonl")), limit=None)
    assert [row["set"] for row in rows[:3]] == [ORIGINAL_SET] * 3
    assert [row["question"] for row in rows[:3]] == [f"Original {template}: 2 + 2?" for template in range(3)]
    assert [(row["set"], row["template"]) for row in rows[3:]] == [(s, t) for s in range(4) for t in range(3)]


def test_sets_keeps_the_first_sets_and_limit_the_first_templates(tmp_path):
    path = apple_layout(tmp_path / "GSM_p1.jsonl")
    rows = load_symbolic_rows(config(path, sets=2), limit=2)
    assert [(row["set"], row["template"]) for row in rows] == [
        (ORIGINAL_SET, 0), (ORIGINAL_SET, 1), (0, 0), (0, 1), (1, 0), (1, 1)]
    assert [row["set"] for row in load_symbolic_rows(config(path, sets=9, original=False), None)] == [s for s in range(4) for _ in range(3)]


def test_report_per_set_spread_range_and_drop(tmp_path):
    rows = load_symbolic_rows(config(apple_layout(tmp_path / "GSM_p2.jsonl", templates=2, sets=3)), limit=None)
    # The originals all right; set 0 all right, set 1 half, set 2 none.
    correct = {ORIGINAL_SET: {0, 1}, 0: {0, 1}, 1: {0}, 2: set()}
    records = [{"set": row["set"], "template": row["template"], "correct": row["template"] in correct[row["set"]]} for row in rows]
    metrics = summarize_symbolic(records)
    assert metrics["per_set_accuracy"] == {"0": 1.0, "1": 0.5, "2": 0.0} and metrics["sets"] == 3
    assert metrics["accuracy_mean"] == pytest.approx(0.5) and metrics["accuracy_std"] == pytest.approx((1 / 6) ** 0.5)
    assert metrics["accuracy_range"] == 1.0 and metrics["drop_from_original"] == pytest.approx(0.5)


def test_a_row_without_a_set_number_names_file_and_line(tmp_path):
    path = apple_layout(tmp_path / "GSM_symbolic.jsonl", templates=1, sets=1)
    path.write_text(path.read_text() + json.dumps({"id": 0, "instance": "x", "question": "q", "answer": "#### 1"}) + "\n")
    with pytest.raises(DataError, match=r"GSM_symbolic\.jsonl:2: not a GSM-Symbolic row"):
        load_symbolic_rows(config(path), limit=None)
