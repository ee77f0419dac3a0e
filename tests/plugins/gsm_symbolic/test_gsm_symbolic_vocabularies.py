"""The vocabularies the official templates name, written by us, in the forms Apple's sets show."""

from __future__ import annotations

from fractions import Fraction

from plugins.gsm_symbolic.rendering import number_in_words, words_to_number
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

# Every vocabulary name the 250 official templates use.
OFFICIAL_NAMES = (
    "names", "names_male", "names_female", "fruits", "colors", "cities", "weekdays", "sports", "currencies_sym",
    "weights_sm", "weights_med", "length_lg", "multi_times", "multiple_ice", "multiple", "fractions",
    "fraction_nums", "fraction_alph", "fraction_alnum", "fraction_decimals",
)


def test_every_official_name_has_a_vocabulary():
    assert all(VOCABULARIES[name] for name in OFFICIAL_NAMES)


def test_fraction_vocabularies_pair_text_with_exact_values():
    nums, words = dict(VOCABULARIES["fraction_nums"]), dict(VOCABULARIES["fraction_alph"])
    assert [text for text, _ in VOCABULARIES["fraction_nums"][:4]] == ["1/2", "1/3", "2/3", "1/4"]
    assert nums["2/4"] == Fraction(1, 2) and words["two-fourths"] == Fraction(1, 2) and words["five-sixths"] == Fraction(5, 6)
    assert words["one-tenth"] == Fraction(1, 10) and len(nums) == len(words) == 45
    assert VOCABULARIES["fraction_alnum"] == VOCABULARIES["fraction_nums"] + VOCABULARIES["fraction_alph"]
    assert dict(VOCABULARIES["fractions"])["an eighth"] == Fraction(1, 8)
    assert VOCABULARIES["fraction_decimals"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_multiplier_vocabularies():
    assert dict(VOCABULARIES["multi_times"]) == {f"{word} times": value for value, word in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]) if value >= 2}
    assert dict(VOCABULARIES["multiple_ice"]) == {"twice": 2, "thrice": 3}
    assert dict(VOCABULARIES["multiple"]) == {"double": 2, "triple": 3, "quadruple": 4, "quintuple": 5}


def test_units_and_fruits_are_singular():
    assert "ounce" in VOCABULARIES["weights_sm"] and {"pound", "kg"} <= set(VOCABULARIES["weights_med"])
    assert {"mile", "kilometer"} <= set(VOCABULARIES["length_lg"])
    assert "apple" in VOCABULARIES["fruits"] and not any(fruit.endswith("s") for fruit in VOCABULARIES["fruits"])


def test_numbers_in_words_as_apples_sets_write_them():
    assert [number_in_words(n) for n in (4, 14, 20, 35, 102, 2250)] == [
        "four", "fourteen", "twenty", "thirty five", "one hundred and two", "two thousand two hundred and fifty"]
    assert all(words_to_number(number_in_words(n)) == n for n in range(0, 3000, 7))
    assert words_to_number("forty-two") == 42 and words_to_number("half") is None
