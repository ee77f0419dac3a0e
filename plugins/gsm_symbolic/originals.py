"""The annotated original values of a template (`{name,original}` marks) and what variants hold.

An original is read as the variable's value: a number for a `$` variable (digits, `1/2`, or words
such as "forty-two"), or the `(text, value)` entry of the variable's vocabulary whose text it is
("half" in `fractions`), or the text itself. The names and numbers variants hold one kind of
variable at these originals and re-sample the other.
"""

from __future__ import annotations

import ast
import random
import re
from fractions import Fraction
from typing import Any

from plugins.gsm_symbolic.binding import bind, store
from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.expressions import Context, Expression, evaluate, sub_expression
from plugins.gsm_symbolic.rendering import words_to_number
from plugins.gsm_symbolic.template import Assignment, Template
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

SAMPLE_HELPERS = ("sample", "sample_sequential", "shuffle_list")
VARIANTS = ("symbolic", "names", "numbers", "p1", "p2", "noop")
FINAL_NUMBER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise TemplateError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def _population_expression(domain: Expression) -> Expression:
    """What a domain samples from (the first argument of `sample(...)`), or the domain itself."""
    call = domain.tree.body
    if isinstance(call, ast.Call) and ast.unparse(call.func) in SAMPLE_HELPERS and call.args:
        return sub_expression(domain, call.args[0])
    return domain


def _population(domain: Expression, environment: dict[str, Any], context: Context) -> Any:
    try:
        return evaluate(_population_expression(domain), environment, context)
    except TemplateError:
        return None  # e.g. it reads a variable that is not bound yet: decide on the text alone


def _display_entry(population: Any, text: str) -> tuple[str, Any] | None:
    if isinstance(population, (list, tuple)):
        for item in population:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0].lower() == text.lower():
                return item
    return None


def parse_number(text: str) -> Any:
    """`1,200` -> 1200, `2.5` -> 2.5, `1/2` -> Fraction(1, 2), `forty-two` -> 42; None otherwise."""
    cleaned = text.replace(",", "").replace("_", "").strip()
    for parse in (int, float):
        try:
            return parse(cleaned)
        except ValueError:
            pass
    if re.fullmatch(r"\d+\s*/\s*\d+", cleaned) and not cleaned.endswith("/0"):
        return Fraction(cleaned.replace(" ", ""))
    return words_to_number(cleaned)


def _any_vocabulary_entry(text: str) -> tuple[str, Any] | None:
    """A `(text, number)` entry of any vocabulary whose text reads like `text` ("a third", "twice"),
    for originals written in words that the line's own vocabulary does not hold."""
    wanted = text.lower().replace("-", " ").strip()
    for items in VOCABULARIES.values():
        for item in items:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and \
                    item[0].lower().replace("-", " ") == wanted:
                return item
    return None


def _original_value(assignment: Assignment, numeric: bool, original: str, environment: dict[str, Any],
                    context: Context) -> tuple[Any, bool]:
    """The value an original stands for, and whether it could be read (a `$` original must be)."""
    population = _population(assignment.domain, environment, context)
    entry = _display_entry(population, original)
    if entry is not None:
        return entry, True
    number = parse_number(original)
    if numeric:
        if number is None and (entry := _any_vocabulary_entry(original)) is not None:
            return (original, entry[1]), True  # shown as written, valued as the vocabulary's entry
        return number, number is not None
    if number is not None and not (isinstance(population, (list, tuple)) and original in population):
        return number, True  # a plain variable drawn from numbers (`a, b = sample(range(...), 2)`)
    return original, True


def original_bindings(template: Template, base: dict[str, Any], context: Context, strict: bool,
                      only: frozenset[str] | None = None) -> tuple[dict[str, Any], dict[str, str], bool]:
    """Values (and question texts) of every variable at its original; lines without originals
    are drawn. `complete` is False when an original could not be read as a value; with `strict`
    that is an error naming the variable (for the variables in `only`, when given: the ones a
    variant holds; the others are re-drawn anyway)."""
    originals = template.originals()
    environment, displays, complete = dict(base), {}, True
    for assignment in template.assignments:
        if all(name in originals for name in assignment.names):
            for name, numeric in zip(assignment.names, assignment.numeric):
                value, readable = _original_value(assignment, numeric, originals[name], environment, context)
                if not readable:
                    if strict and (only is None or name in only):
                        raise assignment.domain.location.error(
                            f"original value {originals[name]!r} of numeric variable {name!r} is not a number")
                    complete = False
                store(name, numeric, value, environment, displays)
            continue
        try:
            bind(assignment, evaluate(assignment.domain, environment, context), environment, displays, context.rng)
        except TemplateError:
            if strict and (only is None or set(assignment.names) & only):
                raise
            complete = False
            for name in assignment.names:
                environment.setdefault(name, None)
    return {name: environment[name] for name in template.variables}, displays, complete


def parse_final_answer(template: Template) -> Any:
    """The number after `####` in the template's original answer (None when there is none)."""
    found = FINAL_NUMBER.search(template.answer)
    return parse_number(found.group(1)) if found else None


def _is_name_like(template: Template, assignment: Assignment) -> bool:
    """A `#init` line of non-numeric variables whose original values are plain text (names, items,
    cities...). `(display, value)` tuples such as `fractions` or `multi_times` carry a number, so
    they count as numeric here even without `$`."""
    if any(assignment.numeric):
        return False
    originals = template.originals()
    if not all(name in originals for name in assignment.names):
        return False
    population = _population(assignment.domain, dict(VOCABULARIES), Context(random.Random(0)))
    for name in assignment.names:
        if _display_entry(population, originals[name]) is not None or parse_number(originals[name]) is not None:
            return False
    return True


def held_variables(template: Template, variant: str) -> frozenset[str]:
    """The variables a variant keeps at their annotated originals (the rest are re-sampled).

    `names` re-samples only the name-like variables (see `_is_name_like`), so every number stays at
    its original; `numbers` re-samples only the `$` numeric variables; every other variant
    re-samples everything. A variable with no annotated original is always sampled.
    """
    check_variant(variant)
    held: set[str] = set()
    for assignment in template.assignments:
        names_keeps = variant == "names" and not _is_name_like(template, assignment)
        numbers_keeps = variant == "numbers" and not any(assignment.numeric)
        if names_keeps or numbers_keeps:
            held.update(assignment.names)
    return frozenset(held)

