"""Turning drawn values into text: the question (marks replaced) and the worked answer.

How a value reads follows Apple's released sets: a `$` variable drawn as `(text, value)` shows its
text in the question and its value in the answer; a number whose original in the question is
written in words is written in words ("thirty five"); a value that starts a sentence starts with a
capital; runs of spaces left by the template collapse to one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from plugins.gsm_symbolic.template import Template

UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
WORD_VALUES = {word: value for value, word in enumerate(UNITS)} | {word: 10 * index for index, word in enumerate(TENS) if word}
SPACES = re.compile(r"[ \t]{2,}")
SENTENCE_ENDS = ".!?\n"


def number_in_words(value: int) -> str:
    """0 <= value < 1,000,000 in words as Apple's sets write them: "thirty five", "one hundred and two"."""
    if value < 20:
        return UNITS[value]
    if value < 100:
        tens, units = divmod(value, 10)
        return TENS[tens] + (f" {UNITS[units]}" if units else "")
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return f"{UNITS[hundreds]} hundred" + (f" and {number_in_words(rest)}" if rest else "")
    thousands, rest = divmod(value, 1000)
    return f"{number_in_words(thousands)} thousand" + (f" {number_in_words(rest)}" if rest else "")


def words_to_number(text: str) -> int | None:
    """"forty-two", "thirty five", "twenty" -> the number; None when `text` is not a number in words."""
    total, current = 0, 0
    words = text.lower().replace("-", " ").replace(" and ", " ").split()
    if not words:
        return None
    for word in words:
        if word in WORD_VALUES:
            current += WORD_VALUES[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word == "thousand":
            total, current = (total + max(current, 1)) * 1000, 0
        else:
            return None
    return total + current


def format_value(value: Any) -> str:
    """How a value reads in text: `(display, value)` shows its display, integral numbers no `.0`."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    if isinstance(value, float):
        if math.isfinite(value) and value == round(value):
            return str(int(value))
        return repr(round(value, 10))
    return str(value)


def json_value(value: Any) -> Any:
    """`values` field form: numbers as JSON numbers, Fractions as "a/b", tuples as lists."""
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    if isinstance(value, (tuple, list, range)):
        return [json_value(item) for item in value]
    return value


def _mark_text(value: Any, display: str | None, original: str | None, numeric: bool) -> str:
    if display is not None:
        return display
    if numeric and original is not None and words_to_number(original) is not None:
        whole = value if isinstance(value, int) else None
        if isinstance(value, (float, Fraction)) and value == int(value):
            whole = int(value)
        if whole is not None and 0 <= whole < 1_000_000 and not isinstance(value, bool):
            return number_in_words(whole)
    return format_value(value)


def render_question(template: Template, values: Mapping[str, Any], displays: Mapping[str, str],
                    original: bool = False, keep: frozenset[str] = frozenset()) -> str:
    """The question text with every mark replaced: by its own original text when `original` or
    when the variable is held (`keep`), else by the drawn value as Apple's sets write it."""
    numeric = template.numeric_names
    pieces: list[str] = []
    position = 0
    for mark in template.marks:
        pieces.append(template.text[position:mark.span[0]])
        if (original or mark.name in keep) and mark.original is not None:
            text = mark.original
        else:
            text = _mark_text(values[mark.name], displays.get(mark.name), mark.original, mark.name in numeric)
        preceding = "".join(pieces).rstrip(" \t")
        if text[:1].islower() and (not preceding or preceding[-1] in SENTENCE_ENDS):
            text = text[0].upper() + text[1:]  # a value that starts a sentence
        pieces.append(text)
        position = mark.span[1]
    pieces.append(template.text[position:])
    return SPACES.sub(" ", "".join(pieces)).strip()


def render_answer(template: Template, texts: list[str]) -> str:
    """The worked answer with each placeholder replaced by its evaluated text, in order."""
    pieces = []
    for part, text in zip(template.answer_parts, texts + [""]):
        pieces.append(part.literal)
        if part.expression is not None:
            pieces.append(text)
    return "".join(pieces).strip()
