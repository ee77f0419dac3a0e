"""The variants: names, numbers, noop (rewrites of the symbolic templates) and p1/p2 (files)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from plugins.gsm_symbolic.cli import run
from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.noop import NOOP_CLAUSES, SENTENCE_END, insert_before_question
from plugins.gsm_symbolic.sampler import VARIANTS, generate_rows, held_variables
from plugins.gsm_symbolic.template import (
    builtin_templates_dir,
    load_template,
    load_templates,
)
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

SYMBOLIC = load_templates()
HARDER = sorted((builtin_templates_dir() / "p1").glob("*.json")) + sorted((builtin_templates_dir() / "p2").glob("*.json"))
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numeric_names(template):
    return {name for assignment in template.assignments for name, numeric in zip(assignment.names, assignment.numeric) if numeric}


def by_path(template):
    return template.path.rsplit("/", 1)[-1]


@pytest.mark.parametrize("template", SYMBOLIC, ids=by_path)
def test_names_variant_changes_only_non_numeric_values(template):
    original = generate_rows(template, 1, seed=0, original=True)[0]
    rows = generate_rows(template, 20, seed=5, variant="names")
    held = held_variables(template, "names")
    assert numeric_names(template) <= held
    for row in rows:
        assert row["variant"] == "names"
        assert {name: row["values"][name] for name in held} == {name: original["values"][name] for name in held}
        # Every number of the question and of the worked answer is the original one.
        assert NUMBER.findall(row["question"]) == NUMBER.findall(template.question)
        assert row["answer"].splitlines()[-1] == template.answer.strip().splitlines()[-1]
    if held != set(template.variables):
        assert len({row["question"] for row in rows}) > 1


@pytest.mark.parametrize("template", SYMBOLIC, ids=by_path)
def test_numbers_variant_changes_only_numeric_values(template):
    original = generate_rows(template, 1, seed=0, original=True)[0]
    rows = generate_rows(template, 20, seed=5, variant="numbers")
    held = held_variables(template, "numbers")
    assert held == set(template.variables) - numeric_names(template)
    masked = NUMBER.sub("#", template.question)
    for row in rows:
        assert row["variant"] == "numbers"
        assert {name: row["values"][name] for name in held} == {name: original["values"][name] for name in held}
        assert NUMBER.sub("#", row["question"]) == masked  # the words are the original ones
    assert len({json.dumps(row["values"]) for row in rows}) > 5


def test_names_keeps_number_carrying_vocabularies():
    template = SYMBOLIC[0]  # `frac = sample(fractions)` is not `$` but carries a number
    assert held_variables(template, "names") == {"total", "sold", "frac"}
    assert held_variables(template, "numbers") == {"name", "item", "relative", "frac"}
    assert held_variables(template, "symbolic") == frozenset()


@pytest.mark.parametrize("template", SYMBOLIC, ids=by_path)
def test_noop_inserts_one_clause_before_the_question_and_keeps_the_answer(template):
    plain = generate_rows(template, 10, seed=2)
    noop = generate_rows(template, 10, seed=2, variant="noop")
    for before, after in zip(plain, noop):
        assert after["variant"] == "noop"
        assert after["answer"] == before["answer"] and after["values"] == before["values"]
        clause = after["noop_clause"]
        *context, question_sentence = SENTENCE_END.split(before["question"])
        assert after["question"] == " ".join([*context, clause, question_sentence])
        assert after["question"].endswith(" " + clause + " " + question_sentence)


def test_noop_bank_and_variety():
    assert len(NOOP_CLAUSES) >= 20
    clauses = {row["noop_clause"] for template in SYMBOLIC for row in generate_rows(template, 4, seed=1, variant="noop")}
    assert len(clauses) > 30
    assert all("{" not in clause and clause[0].isupper() and clause.endswith(".") for clause in clauses)
    # Clauses about a person or the counted things take them from the instance itself.
    rows = generate_rows(SYMBOLIC[9], 60, seed=0, variant="noop")  # animals in pens, no person
    about_things = [row for row in rows if re.search(r"of the \w+ (were|looked)", row["noop_clause"])]
    assert about_things and all(row["values"]["animal"] in row["noop_clause"] for row in about_things)
    names = set(VOCABULARIES["names"])
    assert not any(word in names for row in rows for word in re.findall(r"\w+", row["noop_clause"]))


def test_insert_before_question_edge_cases():
    assert insert_before_question("How many are there?", "It rained.") == "It rained. How many are there?"
    assert insert_before_question("She runs 2.5 km. How far?", "It rained.") == "She runs 2.5 km. It rained. How far?"


@pytest.mark.parametrize("path", HARDER, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_p1_p2_templates_pass_the_checks(path):
    template = load_template(path)
    row = generate_rows(template, 1, seed=0, original=True, variant=path.parent.name)[0]
    assert " ".join(row["question"].split()) == " ".join(template.question.split())
    assert row["answer"].strip() == template.answer.strip()
    rows = generate_rows(template, 50, seed=9, variant=path.parent.name)  # conditions and #### checked inside
    assert len({row["question"] for row in rows}) > 10 and {row["variant"] for row in rows} == {path.parent.name}


def test_p1_p2_add_clauses_to_a_symbolic_template():
    symbolic = {template.id_shuffled: template for template in SYMBOLIC}
    assert len(load_templates(None, "p1")) >= 2 and len(load_templates(None, "p2")) >= 1
    for variant, extra in (("p1", 1), ("p2", 2)):
        for template in load_templates(None, variant):
            base = symbolic[template.id_orig].question
            count = len(SENTENCE_END.split(template.question)) - len(SENTENCE_END.split(base))
            assert count == extra and template.answer.splitlines()[-1] != symbolic[template.id_orig].answer.splitlines()[-1]


def test_variants_read_the_official_layout(tmp_path):
    shipped = builtin_templates_dir()
    shutil.copy(shipped / "symbolic" / "0003.json", tmp_path / "0003.json")  # not in a variant folder
    with pytest.raises(TemplateError, match="no such template folder"):
        load_templates(tmp_path, "p1")
    for folder in ("symbolic", "p1", "p2"):
        (tmp_path / folder).mkdir()
        shutil.copy(shipped / folder / "0003.json", tmp_path / folder / "0003.json")
    for variant in ("p1", "p2"):
        [template] = load_templates(tmp_path, variant)
        assert template.path == str(tmp_path / variant / "0003.json")
    for variant in ("names", "numbers", "noop", "symbolic"):
        [template] = load_templates(tmp_path, variant)
        assert template.path == str(tmp_path / "symbolic" / "0003.json")


def test_unknown_variant_is_refused():
    with pytest.raises(TemplateError, match="unknown variant 'p3'"):
        generate_rows(SYMBOLIC[0], 1, seed=0, variant="p3")


@pytest.mark.parametrize("variant", VARIANTS)
def test_cli_generates_every_variant(tmp_path, variant):
    out = tmp_path / f"{variant}.jsonl"
    assert run(["generate", "--variant", variant, "--instances", "2", "--seed", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows and {row["variant"] for row in rows} == {variant}
    assert len(rows) == 2 * len(load_templates(None, variant))
