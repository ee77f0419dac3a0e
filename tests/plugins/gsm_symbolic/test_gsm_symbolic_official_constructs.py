"""Every construct Apple's official templates use, each on a small template of our own writing.

The official files are CC BY-NC-ND and never read here; each template below does what one kind of
official file does (the construct named in its test), with our own words and numbers.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

import pytest

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.sampler import TemplateSampler, generate, generate_rows
from plugins.gsm_symbolic.template import parse_template
from plugins.gsm_symbolic.vocabularies import VOCABULARIES


def template(text: str, init: list[str], conditions: list[str], answer: str, worked: str,
             question: str = "", answer_line: str = "#answer: ") -> object:
    """A template object from its parts; `worked` is the answer_annotated (ending `#### {...}`)."""
    annotated = (f"{text}\n\n#init:\n" + "".join(f"- {line}\n" for line in init)
                 + ("\n#conditions:\n" + "".join(f"- {line}\n" for line in conditions) if conditions else "")
                 + f"\n{answer_line}{answer}")
    data = {"question": question or re.sub(r"\{(\w+),\s*([^{}]*)\}", r"\2", text), "answer": "x\n#### 1",
            "id_orig": 1, "id_shuffled": 1, "question_annotated": annotated, "answer_annotated": worked}
    return parse_template(data, "mine.json")


def final_number(row: dict) -> Fraction:
    return Fraction(row["answer"].splitlines()[-1].removeprefix("#### ").strip())


def test_dollar_variable_from_text_value_vocabulary_is_its_number():
    # `$frac = sample(fraction_alnum)` used in arithmetic: the value is the number, the question
    # shows the text ("two-fifths" or "2/5"), the worked answer the number.
    made = template("{name,Ivo} shares {frac,half} of his {n,40} stamps. How many does he share?",
                    ["name = sample(names_male)", "$frac = sample(fraction_alnum)", "$n = range(20, 100, 10)"],
                    ["is_int(n * frac)", "frac < 0.5"], "int(n * frac)",
                    "{n} * {frac} = {int(n*frac)}\n#### {int(n * frac)}")
    texts = {text for text, _ in VOCABULARIES["fraction_alnum"]}
    for row in generate_rows(made, 10, seed=3):
        shown = re.search(r"shares (.+) of his", row["question"]).group(1)
        assert shown in texts
        value = dict(VOCABULARIES["fraction_alnum"])[shown]
        assert value < Fraction(1, 2) and final_number(row) == int(row["values"]["n"] * value)
        assert f"* {value.numerator}/{value.denominator} =" in row["answer"]


def test_legacy_index_one_on_a_dollar_pair_variable():
    made = template("Ann runs {mult,twice} as far as Bo, who runs {n,3} km. How far does Ann run?",
                    ["$mult = sample(multiple_ice+multi_times)", "$n = range(2, 9)"],
                    ["n * mult < 60"], "n * mult[1]", "{n} * {mult} = {n*mult}\n#### {n * mult}")
    for row in generate_rows(made, 6, seed=1):
        factor = final_number(row) / row["values"]["n"]
        assert factor == row["values"]["mult"] and 2 <= factor <= 10


def test_integer_pairs_show_their_first_element():
    made = template("Kim pays with a {cur,$}{bill,20} bill for {n,3} pens at {cur,$}2. What change does she get?",
                    ["cur = sample(currencies_sym)", "$bill = sample([(10, 10), (20, 20), (50, 50)])", "$n = range(1, 5)"],
                    ["int(bill) > n * 2"], "int(bill) - n * 2", "{bill} - {n*2} = {bill - n*2}\n#### {int(bill) - n * 2}")
    for row in generate_rows(made, 6, seed=2):
        bill = row["values"]["bill"]
        assert f"{bill} bill" in row["question"] and final_number(row) == bill - 2 * row["values"]["n"]


def test_list_of_range_times_count_and_pair_conditions():
    # `list(range(..)) * 10`, `sample(list(range(..)), k)`, and a count equal to a pair's number.
    made = template("A mother knits for her {count,3} {kids,triplets}: {a,2} hats each. How many hats?",
                    ["$count = list(range(2, 6)) * 10",
                     "$kids = sample([('twins', 2), ('triplets', 3), ('quadruplets', 4), ('quintuplets', 5)] * 10)",
                     "a, b = sample(list(range(3, 9)), 2)"],
                    ["count == kids"], "count * a", "{count} * {a}\n#### {count * a}")
    words = {"twins": 2, "triplets": 3, "quadruplets": 4, "quintuplets": 5}
    for row in generate_rows(made, 8, seed=4):
        kids = re.search(r"her (\d+) (\w+):", row["question"])
        assert words[kids.group(2)] == int(kids.group(1)) == row["values"]["count"]


def test_numpy_randint_with_a_size_is_one_uniform_draw():
    made = template("A shop sold {a,1200} red and {b,1500} blue mugs. How many in all?",
                    ["$a = np.random.randint(1000, 3000, 50)", "$b = np.random.randint(1000, 3000, 50)"],
                    ["a + b < 4000"], "a + b", "{a} + {b}\n#### {a + b}")
    values = [(row["values"]["a"], row["values"]["b"]) for row in generate_rows(made, 20, seed=5)]
    assert all(1000 <= a < 3000 and 1000 <= b < 3000 and a + b < 4000 for a, b in values)
    assert len(set(values)) > 15


@pytest.mark.parametrize("answer_line, answer", [("#answer = ", "w * r"), ("#answer: ", "{w * r}"), ("#answer: ", "$ans")])
def test_answer_line_forms(answer_line, answer):
    # `#answer = expr`, `#answer: {expr}` and a `$` name in the answer line all mean the same.
    made = template("There are {w,4} rows of {r,6} chairs. How many chairs?",
                    ["$w = range(2, 9)", "$r = range(2, 9)", "$ans = range(4, 82)"],
                    ["ans == w * r"], answer, "{w} * {r}\n#### {w * r}", answer_line=answer_line)
    for row in generate_rows(made, 5, seed=6):
        assert final_number(row) == row["values"]["w"] * row["values"]["r"] == row["values"]["ans"]


def test_format_frac_and_fraction_of_a_pair():
    made = template("Pia watched TV for {h,2} hours and {m,30} minutes. How many hours is that?",
                    ["$h = range(1, 4)", "$m = sample([15, 30, 45])"], [],
                    "h + Fraction(m, 60)", "{h} + {Fraction(m, 60)} = {format_frac(h + Fraction(m, 60))}\n#### {h + Fraction(m, 60)}")
    for row in generate_rows(made, 5, seed=7):
        total = row["values"]["h"] + Fraction(row["values"]["m"], 60)
        assert row["answer"].splitlines()[0].endswith(f"= {total.numerator}/{total.denominator}")


def test_a_later_assignment_replaces_an_earlier_one():
    made = template("Sam walks {frac,half} of {n,8} km. How far?",
                    ["$frac = sample(fraction_nums)", "$n = range(4, 20, 2)", "$frac = sample(fraction_nums[:4])"],
                    ["is_int(n * frac)"], "n * frac", "{n} * {frac}\n#### {n * frac}")
    assert [assignment.names for assignment in made.assignments] == [("n",), ("frac",)]
    firsts = {text for text, _ in VOCABULARIES["fraction_nums"][:4]}
    assert all(re.search(r"walks (\S+) of", row["question"]).group(1) in firsts for row in generate_rows(made, 8, seed=8))


def test_rendering_words_capitals_spaces_and_each_marks_own_original():
    made = template("{item,hay} costs {cur,$}{p,4}. He buys {n,forty-two}  bags. {name,Garret} and {name,Garrett} pay. Total?",
                    ["item = sample(['hay', 'oats'])", "cur = sample(currencies_sym)", "$p = range(2, 6)",
                     "$n = numbers_within(31, 35)", "name = sample(names_male)"], [],
                    "p * n", "{p} * {n}\n#### {p * n}",
                    question="hay costs $4. He buys forty-two  bags. Garret and Garrett pay. Total?")
    row = generate_rows(made, 1, seed=9)[0]
    words = {31: "thirty one", 32: "thirty two", 33: "thirty three", 34: "thirty four", 35: "thirty five"}
    assert row["question"].startswith(("Hay costs", "Oats costs"))  # a value opening a sentence is capitalised
    assert f"buys {words[row['values']['n']]} bags" in row["question"]  # words, as the original; one space
    original = TemplateSampler(made).draw_original(random.Random(0)).question
    assert original == "Hay costs $4. He buys forty-two bags. Garret and Garrett pay. Total?"


def test_bare_vocabulary_domain_slices_and_sums_of_vocabularies():
    made = template("Use {w,1/2} cup of {unit,ounce} per cake, {k,twice} a day. How much?",
                    ["$w = fraction_nums", "unit = sample(weights_sm)", "$k = sample(multi_times[:3] + multiple_ice)"],
                    ["w < 1"], "w * k", "{w} * {k}\n#### {w * k}")
    for row in generate_rows(made, 8, seed=10):
        assert Fraction(row["values"]["w"]) < 1 and row["values"]["k"] in (2, 3, 4)


def test_arange_fix_floats_shuffle_and_sequential_domains():
    made = template("A bolt costs {cur,$}{p,0.25}; {name,Al} buys {n,8} on {d1,Monday} and {d2,Friday}. Cost?",
                    ["cur = sample(currencies_sym)", "$p = fix_floats(shuffle_list(list(np.arange(0.05, 0.5, 0.05))))",
                     "$n = range(2, 30)", "name = sample(names_male)", "d1, d2 = sample_sequential(weekdays, 2)"],
                    ["is_int(p * n)", "0 < p * n < 10"], "p * n", "{p} * {n}\n#### {p * n}")
    days = VOCABULARIES["weekdays"]
    for row in generate_rows(made, 8, seed=11):
        assert float(final_number(row)) == pytest.approx(row["values"]["p"] * row["values"]["n"])
        assert days.index(row["values"]["d1"]) < days.index(row["values"]["d2"])


def test_chained_comparisons_and_conditional_expressions():
    made = template("A room is {a,4} {u1,feet} by {b,9} {u2,yards}. What is its area in square feet?",
                    ["$a = range(2, 20)", "$b = range(2, 20)", "u1 = sample(['feet'])", "u2 = sample(['yards', 'feet'])"],
                    ["2 < a < b < 15"], "a * b * (3 if u2 == 'yards' else 1)",
                    "{a} * {b * (3 if u2 == 'yards' else 1)}\n#### {a * b * (3 if u2 == 'yards' else 1)}")
    for row in generate_rows(made, 8, seed=12):
        a, b = row["values"]["a"], row["values"]["b"]
        assert 2 < a < b < 15 and final_number(row) == a * b * (3 if row["values"]["u2"] == "yards" else 1)


def test_rare_conditions_are_listed_exactly_and_report_their_acceptance():
    # Four increasing numbers whose sum must be a multiple of 7 drawn separately: about 1 draw in
    # 5,000 meets it; the chain is checked link by link and the sum pins the last number, so the
    # valid draws are listed (and picked by weight) instead of rejected for.
    made = template("Four boxes hold {a,3}, {b,5}, {c,7} and {d,13} pens, {t,28} in all. How many in the last?",
                    ["$a = range(1, 13)", "$b = range(1, 13)", "$c = range(1, 13)", "$d = range(1, 13)",
                     "$t = range(5, 60)"],
                    ["a + b + c + d == t", "divides(t, 7)", "a < b < c < d"], "d",
                    "{t} - {a+b+c}\n#### {t - a - b - c}")
    rows, stats = generate(made, 6, seed=13)
    assert stats.method == "enumeration" and 0 < stats.acceptance < 0.001
    for row in rows:
        values = row["values"]
        assert sum(values[name] for name in "abcd") == values["t"] and values["t"] % 7 == 0
        assert values["a"] < values["b"] < values["c"] < values["d"]
    assert generate_rows(made, 3, seed=13) == rows[:3]


def test_self_contradicting_file_is_refused_for_every_draw():
    made = template("There are {a,5} cats and {b,3} dogs. How many pets?",
                    ["$a = range(2, 9)", "$b = range(2, 9)"], [], "a + b", "{a} + {b}\n#### {a + b + 1}")
    with pytest.raises(TemplateError, match=r"mine\.json: #answer contradicts the worked answer's '####' line for every possible draw"):
        generate(made, 2, seed=0)


def test_unsatisfiable_conditions_are_proved_so():
    made = template("Pick {a,2}. Answer?", ["$a = range(1, 50)"], ["a > 60"], "a", "{a}\n#### {a}")
    with pytest.raises(TemplateError, match=r"conditions cannot be met \(no possible draw satisfies #conditions"):
        generate(made, 2, seed=0)


def test_variants_hold_originals_written_in_words_or_outside_the_ranges():
    # Apple's originals are often outside the template's ranges, or words its vocabulary lacks.
    made = template("{name,Ivo} runs {k,twice} around a {m,3}-km loop and then {a,2} km. He did {n,forty-two} laps last week. How far today?",
                    ["name = sample(names_male)", "$k = sample(multi_times)", "$m = range(5, 9)",
                     "a = sample(list(range(4, 9)))", "$n = numbers_within(31, 35)"],
                    ["m > 4", "n > 30"], "m * k + a", "{m} * {k} + {a}\n#### {m * k + a}")
    for row in generate_rows(made, 4, seed=1, variant="names"):  # every number held, the name drawn
        assert (row["values"]["k"], row["values"]["m"], row["values"]["a"], row["values"]["n"]) == (2, 3, 2, 42)
        assert "runs twice around a 3-km loop" in row["question"] and final_number(row) == 8
    for row in generate_rows(made, 4, seed=1, variant="numbers"):  # the plain `a` held, as a number
        assert row["values"]["a"] == 2 and row["values"]["name"] == "Ivo"
        assert final_number(row) == row["values"]["m"] * row["values"]["k"] + 2
