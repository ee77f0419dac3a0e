"""The restricted evaluator: the whitelist works, everything else is refused with file and line."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from plugins.gsm_symbolic.errors import Location, TemplateError
from plugins.gsm_symbolic.expressions import divides, evaluate_text, is_int

HERE = Location("demo.json", 7, "question_annotated")


@pytest.mark.parametrize("text, expected", [
    ("1 + 2 * 3 - 4 / 2", 5.0),
    ("7 // 2 + 7 % 2 + 2 ** 3", 12),
    ("-x + +x", 0),
    ("not (x > 1) or x == 3", True),
    ("1 < x <= 3", True),
    ("'a' if x > 2 else 'b'", "a"),
    ("(1, 2)[1] + [4, 5, 6][-1]", 8),
    ("[1, 2, 3, 4][1:3]", [2, 3]),
    ("'abc' + 'd'", "abcd"),
    ("x in [1, 2, 3]", True),
    ("min(4, x) + max(1, 2) + abs(-1) + len([1, 2]) + sum([1, 2])", 11),
    ("round(2.567, 1)", 2.6),
    ("int(3.9) + float(1)", 4.0),
    ("str(12)", "12"),
    ("Fraction(3, 6) + Fraction('1/2') + Fraction('0.5')", Fraction(3, 2)),
    ("round(7.5) + round(2.25, 1)", 10.2),
    ("is_int(Fraction(6, 3)) and not is_int(2.5)", True),
    ("divides(12, 4) and not divides(4, 12)", True),
    ("numbers_within(2, 4)", range(2, 5)),
    ("np.arange(0, 1, 0.25)", [0.0, 0.25, 0.5, 0.75]),
    ("frange(1, 2, 0.5)", [1.0, 1.5]),
    ("fix_floats(0.1 + 0.2)", 0.3),
    ("list_a + list_b", [1, 2]),
])
def test_whitelisted_expressions_evaluate(text, expected):
    assert evaluate_text(text, {"x": 3, "list_a": [1], "list_b": [2]}) == expected


def test_random_helpers_are_deterministic_per_rng():
    text = "[sample(range(100)), sample([1, 2, 3, 4, 5], 2), sample_sequential(range(50), 3), np.random.randint(1, 4), shuffle_list([1, 2, 3])]"
    first = evaluate_text(text, {}, random.Random(5))
    assert first == evaluate_text(text, {}, random.Random(5))
    assert first[2] == sorted(first[2])
    assert 1 <= first[3] < 4 and sorted(first[4]) == [1, 2, 3]


def test_sample_over_display_value_tuples():
    pairs = [("half", Fraction(1, 2)), ("a third", Fraction(1, 3))]
    assert evaluate_text("sample(pairs)", {"pairs": pairs}) in pairs


def test_range_excludes_upper_bound():
    values = {evaluate_text("sample(range(1, 3))", {}, random.Random(seed)) for seed in range(40)}
    assert values == {1, 2}


def test_helper_semantics():
    assert divides(10, 5) and not divides(10, 3) and not divides(3, 0)
    assert is_int(4) and is_int(4.0) and is_int(Fraction(8, 2)) and not is_int(Fraction(1, 3)) and not is_int(True)


@pytest.mark.parametrize("text, fragment", [
    ("__import__('os')", "unknown function '__import__'"),
    ("().__class__", "attribute access"),
    ("x.__class__", "attribute access"),
    ("np.random", "attribute access"),
    ("(lambda: 1)()", "Lambda is not allowed"),
    ("[i for i in range(10 ** 9)]", "ListComp is not allowed"),
    ("{i: i for i in range(3)}", "DictComp is not allowed"),
    ("sum(i for i in range(3))", "GeneratorExp is not allowed"),
    ("10 ** 10 ** 10", "exponent"),
    ("2 ** 100 * 2 ** 100 * 2 ** 100", "too large"),
    ("'a' * 10 ** 9", "sequence too long"),
    ("open('x')", "unknown function 'open'"),
    ("os.system('ls')", "unknown function 'os.system'"),
    ("max(*[1, 2])", "Starred is not allowed"),
    ("round(x, ndigits=1)", "keyword is not allowed"),
    ("f'{x}'", "JoinedStr is not allowed"),
    ("1j + x", "constant 1j is not allowed"),
    ("'%0999999999d' % 1", "%-formatting"),
    ("Fraction('1e999999999')", "must look like"),
    ("round(5, -10 ** 9)", "outside"),
    ("numbers_within(0, 10 ** 18)", "limit"),
    ("shuffle_list(range(10 ** 7))", "limit"),
    ("sample(range(10 ** 6), 10 ** 6)", "limit"),
    ("b'x'", "constant b'x' is not allowed"),
    ("_x + 1", "leading underscore"),
    ("x := 3", "cannot parse"),
    ("1 / 0", "cannot evaluate"),
    ("y + 1", "unknown name 'y'"),
])
def test_refused_expressions_name_file_and_line(text, fragment):
    with pytest.raises(TemplateError) as caught:
        evaluate_text(text, {"x": 3, "_x": 1}, location=HERE)
    message = str(caught.value)
    assert message.startswith("demo.json, question_annotated, line 7: ")
    assert fragment in message
