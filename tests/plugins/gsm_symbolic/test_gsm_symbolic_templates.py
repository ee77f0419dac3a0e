"""Template parsing and instance sampling, on the shipped templates and on small broken ones."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.expressions import evaluate
from plugins.gsm_symbolic.sampler import (
    draw_instance,
    format_value,
    generate_rows,
    instance_rng,
    json_value,
)
from plugins.gsm_symbolic.template import (
    builtin_templates_dir,
    load_template,
    load_templates,
    parse_template,
)
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

SHIPPED = sorted((builtin_templates_dir() / "symbolic").glob("*.json"))

SMALL = {
    "question": "Ana has 4 pears and buys 2 more. How many pears does she have?",
    "answer": "4 + 2 = <<4+2=6>>6\n#### 6",
    "id_orig": 3, "id_shuffled": 9,
    "question_annotated": (
        "{name,Ana} has {a,4} {fruit,pears} and buys {b,2} more. How many {fruit,pears} does she have?\n\n"
        "#init:\n- name = sample(names_female)\n- fruit = sample(fruits)\n- $a, $b = sample(range(1, 20), 2)\n\n"
        "#conditions:\n- a > b\n\n#answer: a + b"),
    "answer_annotated": "{a} + {b} = <<{a}+{b}={a+b}>>{a+b}\n#### {a + b}",
}


def write(tmp_path: Path, data: object, name: str = "0000.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def with_annotation(question_annotated: str) -> dict:
    return {**SMALL, "question_annotated": question_annotated}


def test_at_least_twenty_five_templates_are_shipped():
    assert len(SHIPPED) >= 25
    assert [path.name for path in SHIPPED[:25]] == [f"{number:04d}.json" for number in range(25)]
    assert [template.path for template in load_templates()] == [str(path) for path in SHIPPED]


def test_parse_small_template():
    template = parse_template(SMALL, "small.json")
    assert template.variables == ("name", "fruit", "a", "b")
    assert template.assignments[2].names == ("a", "b") and template.assignments[2].numeric == (True, True)
    assert template.assignments[0].numeric == (False,)
    assert [condition.text for condition in template.conditions] == ["a > b"]
    assert template.gold.text == "a + b" and template.final_answer.text == "a + b"
    assert template.originals() == {"name": "Ana", "a": "4", "fruit": "pears", "b": "2"}
    assert template.conditions[0].location.line == 9


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_original_reproduces_question_and_answer(path):
    template = load_template(path)
    row = generate_rows(template, 1, seed=0, original=True)[0]
    assert " ".join(row["question"].split()) == " ".join(template.question.split())
    assert row["answer"].strip() == template.answer.strip()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_fifty_instances_satisfy_conditions_and_match_gold(path):
    template = load_template(path)
    rows = generate_rows(template, 50, seed=123)
    assert len({row["question"] for row in rows}) > 10  # the variables really vary
    for number, row in enumerate(rows):
        assert row["instance"] == number and row["variant"] == "symbolic"
        assert row["id"] == template.id_shuffled and row["original_id"] == template.id_orig
        assert row["original_question"] == template.question and row["original_answer"] == template.answer
        instance = draw_instance(template, instance_rng(123, template, number))
        environment = {**VOCABULARIES, **instance.values}
        rng = instance_rng(0, template, 0)
        assert all(evaluate(condition, environment, rng) for condition in template.conditions)
        final = row["answer"].strip().splitlines()[-1]
        assert final.startswith("#### ") and float(final[5:]) == pytest.approx(float(instance.gold))
        assert row["question"] == instance.question and "{" not in row["question"]
        json.dumps(row)  # every row is plain JSON


def test_generation_is_deterministic_per_seed():
    template = parse_template(SMALL, "small.json")
    assert generate_rows(template, 20, seed=7) == generate_rows(template, 20, seed=7)
    assert generate_rows(template, 20, seed=7) != generate_rows(template, 20, seed=8)
    # Instance i does not depend on how many instances were drawn before it.
    assert generate_rows(template, 20, seed=7)[:5] == generate_rows(template, 5, seed=7)


def test_values_field_format():
    assert json_value(Fraction(1, 2)) == "1/2" and json_value(Fraction(4, 2)) == 2
    assert json_value(("half", Fraction(1, 2))) == ["half", "1/2"] and json_value(3.5) == 3.5
    assert format_value(("twice", 2)) == "twice" and format_value(6.0) == "6" and format_value(Fraction(3, 4)) == "3/4"


def test_unsatisfiable_conditions_name_the_template(tmp_path):
    annotated = SMALL["question_annotated"].replace("- a > b", "- a > 100")
    template = load_template(write(tmp_path, with_annotation(annotated), "0042.json"))
    with pytest.raises(TemplateError, match=r"0042\.json: conditions cannot be met"):
        draw_instance(template, instance_rng(0, template, 0), max_tries=200)


def test_answer_mismatch_is_refused(tmp_path):
    template = load_template(write(tmp_path, {**SMALL, "answer_annotated": "#### {a - b}"}))
    # `#### a - b` never equals `#answer: a + b` (b >= 1): every possible draw is listed and refused.
    with pytest.raises(TemplateError, match=r"0000\.json: #answer contradicts the worked answer's '####' line "
                                            r"for every possible draw"):
        draw_instance(template, instance_rng(0, template, 0))


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path, '{\n  "question": "x",\n  "answer": oops\n}')
    with pytest.raises(TemplateError, match=r"0000\.json: line 3: malformed JSON"):
        load_template(path)


@pytest.mark.parametrize("change, fragment", [
    (lambda data: {k: v for k, v in data.items() if k != "answer_annotated"}, "missing field(s) answer_annotated"),
    (lambda data: with_annotation(data["question_annotated"].replace("sample(fruits)", "sample(planets)")),
     "question_annotated, line 5: unknown vocabulary 'planets'"),
    (lambda data: with_annotation(data["question_annotated"].replace("sample(fruits)", "fetch(fruits)")),
     "question_annotated, line 5: unknown function 'fetch'"),
    (lambda data: with_annotation(data["question_annotated"].replace("- a > b", "- __import__('os')")),
     "question_annotated, line 9: unknown function '__import__'"),
    (lambda data: with_annotation(data["question_annotated"].replace("- a > b", "- [x for x in range(10**9)]")),
     "question_annotated, line 9: ListComp is not allowed"),
    (lambda data: with_annotation(data["question_annotated"].replace("#answer: a + b", "#answer: a + c")),
     "question_annotated, line 11: unknown variable 'c'"),
    (lambda data: with_annotation(data["question_annotated"].replace("{b,2}", "{b,2")),
     "unbalanced"),
    (lambda data: with_annotation(data["question_annotated"].replace("{name,Ana}", "{who,Ana}")),
     "question_annotated, line 1: variable 'who' is marked in the text but not assigned"),
    (lambda data: with_annotation(data["question_annotated"].replace("#init:", "#start:")), "missing section #init"),
    (lambda data: {**data, "answer_annotated": "{a} + {b}"}, "answer_annotated, line 1: the last line must be"),
    (lambda data: {**data, "answer_annotated": "{a.__class__}\n#### {a + b}"}, "answer_annotated, line 1: attribute access"),
])
def test_bad_templates_are_refused_with_file_and_line(tmp_path, change, fragment):
    with pytest.raises(TemplateError) as caught:
        load_template(write(tmp_path, change(dict(SMALL)), "0007.json"))
    assert str(caught.value).startswith(str(tmp_path / "0007.json"))
    assert fragment in str(caught.value)


def test_missing_variant_folder(tmp_path):
    with pytest.raises(TemplateError, match="no such template folder"):
        load_templates(tmp_path, "p1")
