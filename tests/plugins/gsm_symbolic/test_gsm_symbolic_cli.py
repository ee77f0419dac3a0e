"""`toolkit-gsm-symbolic generate`, run in-process through the same entry point the script uses."""

from __future__ import annotations

import json

from plugins.gsm_symbolic.cli import run
from plugins.gsm_symbolic.template import load_templates
from toolkit.cli.common import run_cli

from helpers import assert_error_output, assert_unchanged, snapshot


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generate_writes_rows_for_every_template(tmp_path):
    out = tmp_path / "sets" / "symbolic.jsonl"
    assert run(["generate", "--instances", "3", "--seed", "4", "--out", str(out)]) == 0
    rows = read_rows(out)
    templates = load_templates()
    assert len(rows) == 3 * len(templates)
    assert {row["id"] for row in rows} == {template.id_shuffled for template in templates}
    assert all(row["answer"].splitlines()[-1].startswith("#### ") for row in rows)
    assert [path.name for path in out.parent.iterdir()] == ["symbolic.jsonl"]  # no temporary left
    again = tmp_path / "again.jsonl"
    run(["generate", "--instances", "3", "--seed", "4", "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_generate_original_reproduces_questions(tmp_path):
    out = tmp_path / "original.jsonl"
    assert run(["generate", "--original", "--out", str(out)]) == 0
    for row in read_rows(out):
        assert row["question"] == row["original_question"] and row["answer"] == row["original_answer"]


def test_missing_template_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "kept.jsonl").write_text('{"from": "an earlier run"}\n')
    before = snapshot(tmp_path)
    for out in ("x.jsonl", "kept.jsonl"):  # nothing written, nothing overwritten
        code = run_cli(run, ["generate", "--templates", str(tmp_path), "--variant", "p1", "--out", str(tmp_path / out)])
        assert_error_output(code, capsys.readouterr().err, "no such template folder", str(tmp_path))
        assert_unchanged(before, tmp_path)


def test_folder_run_carries_on_past_a_refused_template(tmp_path, capsys):
    folder = tmp_path / "templates" / "symbolic"
    folder.mkdir(parents=True)
    good = {"question": "Ana has 4 pens. How many?", "answer": "4\n#### 4", "id_orig": 1, "id_shuffled": 1,
            "question_annotated": "Ana has {a,4} pens. How many?\n\n#init:\n- $a = range(2, 9)\n\n#answer: a",
            "answer_annotated": "{a}\n#### {a}"}
    bad = {**good, "id_shuffled": 2, "answer_annotated": "{a}\n#### {a + 1}"}  # contradicts #answer
    (folder / "0000.json").write_text(json.dumps(good))
    (folder / "0001.json").write_text(json.dumps(bad))
    out, stats = tmp_path / "out.jsonl", tmp_path / "stats.jsonl"
    code = run_cli(run, ["generate", "--templates", str(tmp_path / "templates"), "--instances", "3",
                         "--out", str(out), "--stats", str(stats)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"refused: {folder / '0001.json'}: #answer contradicts the worked answer" in err
    assert "1/2 templates, 3 instances written to" in err and "1 refused" in err
    assert [row["id"] for row in read_rows(out)] == [1, 1, 1]
    written, refused = read_rows(stats)
    assert written["template"] == "symbolic/0000.json" and written["method"] == "rejection" and written["acceptance"] == 1.0
    assert refused["status"] == "refused" and "contradicts" in refused["reason"]
