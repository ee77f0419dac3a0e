"""Hostile templates end at once: evaluated correctly, or refused in one line naming file and line
(exit 2, nothing written), never an internal error; each template's evaluation has a budget."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import assert_one_line_error
from plugins.gsm_symbolic.cli import run
from toolkit.cli.common import run_cli


def hostile(condition: str = "a > 1", domain: str = "range(1, 20)") -> dict:
    return {
        "question": "Ana has 4 pens. How many?", "answer": "4\n#### 4", "id_orig": 1, "id_shuffled": 1,
        "question_annotated": (f"Ana has {{a,4}} pens. How many?\n\n#init:\n- $a = {domain}\n\n"
                               f"#conditions:\n- {condition}\n\n#answer: a"),
        "answer_annotated": "{a}\n#### {a}",
    }


def generate_from(tmp_path, capsys, data: dict) -> subprocess.CompletedProcess:
    folder = tmp_path / "templates" / "symbolic"
    folder.mkdir(parents=True)
    (folder / "0000.json").write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code = run_cli(run, ["generate", "--templates", str(tmp_path / "templates"), "--out", str(out)])
    captured = capsys.readouterr()
    assert not out.exists()  # nothing written, not even half
    return subprocess.CompletedProcess([], code, captured.out, captured.err)


@pytest.mark.parametrize("data, fragments", [
    # a 1,500-term sum: refused for its size before it is parsed; 400 terms: for its depth
    (hostile(condition="a > " + "+".join(["1"] * 1500)), ["0000.json, question_annotated, line 7", "expression of 3,003 characters"]),
    (hostile(condition="a > " + "+".join(["1"] * 400)), ["0000.json, question_annotated, line 7", "too large or too deeply nested"]),
    # a 10,000-deep minus chain and a 50 KB line: refused for their length before parsing
    (hostile(condition="a > " + "-" * 10_000 + "1"), ["question_annotated, line 7", "line of 10,007 characters"]),
    (hostile(condition="a > " + "+".join(["np.arange(1)"] * 4000)), ["question_annotated, line 7", "characters (limit 4,000)"]),
    # a minus chain short enough to be read: refused for its depth
    (hostile(condition="a > " + "-" * 1500 + "1"), ["question_annotated, line 7", "nested"]),
    # a value of ten billion items handed to str, sum or fix_floats: refused before it exists
    (hostile(condition="str([[0] * 100000] * 100000) == a"), ["question_annotated, line 7", "sequence too long"]),
    (hostile(condition="sum([[0] * 100000] * 100000) > a"), ["question_annotated, line 7", "sequence too long"]),
    (hostile(domain="fix_floats([[0.5] * 100000] * 100000)"), ["question_annotated, line 4", "sequence too long"]),
    # an always-false membership in a ten-million range: answered in constant time, proved unmeetable
    (hostile(condition="0.5 in range(10**7)"), ["0000.json: conditions cannot be met", "never holds"]),
    (hostile(condition="a + 0.5 in range(10**7)"), ["0000.json: conditions cannot be met", "all were listed"]),
    # a costly condition times thousands of retries: the evaluation budget stops it
    (hostile(condition="sum(range(10**7)) < 0 or a > 100", domain="range(1, 10**6)"),
     ["question_annotated, line 7", "evaluation budget reached"]),
    # deep lists
    (hostile(condition="a > len(" + "[" * 200 + "1" + "]" * 200 + ")"), ["question_annotated, line 7", "nested"]),
])
def test_hostile_template_is_refused_with_file_and_line(tmp_path, capsys, data, fragments):
    assert_one_line_error(generate_from(tmp_path, capsys, data), *fragments)


def test_oversized_file_is_refused_before_reading(tmp_path, capsys):
    data = hostile()
    data["padding"] = "x" * 1_100_000
    assert_one_line_error(generate_from(tmp_path, capsys, data), "0000.json: template file of", "limit 1,000,000")
