"""Drawing instances from a template: sample `#init`, reject until `#conditions` hold, render.

Each instance has its own `random.Random` seeded from (seed, template id, instance number), so an
instance does not depend on how many others were drawn or in which order. `original=True` puts
every marked variable at its annotated original value instead, which reproduces the original
question. Every instance is checked: its conditions hold and the `#### N` of its rendered answer
equals the `#answer` expression.
"""

from __future__ import annotations

import ast
import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from plugins.gsm_symbolic.errors import Location, TemplateError
from plugins.gsm_symbolic.expressions import Expression, evaluate
from plugins.gsm_symbolic.noop import insert_before_question, noop_clause
from plugins.gsm_symbolic.template import Assignment, Template
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

DEFAULT_MAX_TRIES = 10_000
SAMPLE_HELPERS = ("sample", "sample_sequential", "shuffle_list")
# symbolic/p1/p2: every variable sampled (p1/p2 differ only in their template files);
# names/numbers: only one kind of variable re-sampled; noop: symbolic plus one inert clause.
VARIANTS = ("symbolic", "names", "numbers", "p1", "p2", "noop")


@dataclass(frozen=True)
class Instance:
    values: dict[str, Any]
    question: str
    answer: str
    gold: Any


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


def _numeric(value: Any) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        value = value[1]
    if isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
        return float(value)
    return None


def _bind(assignment: Assignment, value: Any, values: dict[str, Any], rng: random.Random) -> None:
    """A domain that evaluates to a list or range is sampled from; a single value is used as is."""
    location = assignment.domain.location
    if len(assignment.names) == 1:
        if isinstance(value, (list, range)):
            if len(value) == 0:
                raise location.error(f"domain {assignment.domain.text!r} is empty")
            value = rng.choice(value)
        values[assignment.names[0]] = value
        return
    count = len(assignment.names)
    if isinstance(value, (list, tuple)) and len(value) == count:
        items = list(value)
    elif isinstance(value, (list, range)) and len(value) > count:
        items = rng.sample(list(value) if isinstance(value, list) else value, count)
    else:
        raise location.error(f"cannot assign {count} variables from {assignment.domain.text!r}")
    values.update(zip(assignment.names, items))


def _population(domain: Expression, values: dict[str, Any], rng: random.Random) -> Any:
    """What a domain samples from, for looking up a `(display, value)` original by its display."""
    call = domain.tree.body
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in SAMPLE_HELPERS and call.args:
        inner = Expression(ast.unparse(call.args[0]), ast.Expression(call.args[0]), domain.location, domain.names)
        return evaluate(inner, {**VOCABULARIES, **values}, rng)
    return evaluate(domain, {**VOCABULARIES, **values}, rng)


def _parse_number(text: str, location: Location, name: str) -> Any:
    cleaned = text.replace(",", "").replace("_", "").strip()
    try:
        if "/" in cleaned:
            return Fraction(cleaned)
        return int(cleaned)
    except ValueError:
        pass
    try:
        return float(cleaned)
    except ValueError:
        raise location.error(f"original value {text!r} of numeric variable {name!r} is not a number") from None


def _original_value(assignment: Assignment, name: str, numeric: bool, original: str,
                    values: dict[str, Any], rng: random.Random) -> Any:
    location = assignment.domain.location
    if numeric:
        return _parse_number(original, location, name)
    try:
        population = _population(assignment.domain, values, rng)
    except TemplateError:
        population = None
    if isinstance(population, (list, tuple)):
        for item in population:
            if isinstance(item, tuple) and len(item) == 2 and item[0] == original:
                return item
    return original


def _draw_values(template: Template, rng: random.Random, original: bool,
                 keep: frozenset[str] | None = None) -> dict[str, Any]:
    """Sample every variable; those in `keep` (all of them when `original`) take their originals."""
    values: dict[str, Any] = {}
    originals = template.originals()
    for assignment in template.assignments:
        held = original or (keep is not None and any(name in keep for name in assignment.names))
        if held and all(name in originals for name in assignment.names):
            for name, numeric in zip(assignment.names, assignment.numeric):
                values[name] = _original_value(assignment, name, numeric, originals[name], values, rng)
            continue
        domain_value = evaluate(assignment.domain, {**VOCABULARIES, **values}, rng)
        _bind(assignment, domain_value, values, rng)
    return values


def _conditions_hold(template: Template, values: dict[str, Any], rng: random.Random) -> bool:
    environment = {**VOCABULARIES, **values}
    return all(bool(evaluate(condition, environment, rng)) for condition in template.conditions)


def render_question(template: Template, values: dict[str, Any], original: bool = False,
                    keep: frozenset[str] = frozenset()) -> str:
    """The question text with every mark replaced (by its original text when `original`, or when
    the variable is in `keep`, i.e. held at its original value)."""
    originals = template.originals()
    pieces, position = [], 0
    for mark in template.marks:
        pieces.append(template.text[position:mark.span[0]])
        use_original = (original or mark.name in keep) and mark.name in originals
        pieces.append(originals[mark.name] if use_original else format_value(values[mark.name]))
        position = mark.span[1]
    pieces.append(template.text[position:])
    return "".join(pieces).strip()


def render_answer(template: Template, values: dict[str, Any], rng: random.Random) -> str:
    environment = {**VOCABULARIES, **values}
    pieces = []
    for part in template.answer_parts:
        pieces.append(part.literal)
        if part.expression is not None:
            pieces.append(format_value(evaluate(part.expression, environment, rng)))
    return "".join(pieces).strip()


def _is_name_like(template: Template, assignment: Assignment) -> bool:
    """A `#init` line of non-numeric variables whose original values are plain text (names, items,
    cities...). `(display, value)` tuples such as `fractions` or `multi_times` carry a number, so
    they count as numeric here even without `$`."""
    if any(assignment.numeric):
        return False
    originals = template.originals()
    if not all(name in originals for name in assignment.names):
        return False
    probe = random.Random(0)
    try:
        population = _population(assignment.domain, {}, probe)
    except TemplateError:
        population = None  # the domain reads earlier variables; decide on the original text alone
    for name in assignment.names:
        value = originals[name]
        if isinstance(population, (list, tuple)):
            for item in population:
                if isinstance(item, tuple) and len(item) == 2 and item[0] == value:
                    return False
        if _numeric(_parse_or_text(value)) is not None:
            return False
    return True


def _parse_or_text(text: str) -> Any:
    try:
        return _parse_number(text, Location("-"), "-")
    except TemplateError:
        return text


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


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise TemplateError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def draw_instance(template: Template, rng: random.Random, original: bool = False,
                  max_tries: int = DEFAULT_MAX_TRIES, variant: str = "symbolic") -> Instance:
    """Sample until the conditions hold (at most `max_tries` draws), render and check the answer.

    `variant` "names" or "numbers" holds the other kind of variable at its original value (see
    `held_variables`); the inserted clause of "noop" is added by `generate_rows`.
    """
    keep = held_variables(template, variant)
    tries = 1 if original else max_tries
    for _ in range(tries):
        values = _draw_values(template, rng, original, keep)
        if _conditions_hold(template, values, rng):
            break
    else:
        what = "the original values do not" if original else f"no draw in {max_tries} tries did"
        raise TemplateError(f"{template.path}: conditions cannot be met ({what} satisfy #conditions)")
    environment = {**VOCABULARIES, **values}
    gold = evaluate(template.gold, environment, rng)
    final = evaluate(template.final_answer, environment, rng)
    if _numeric(gold) is None or _numeric(final) is None or not math.isclose(_numeric(gold), _numeric(final), rel_tol=1e-9, abs_tol=1e-9):
        raise TemplateError(f"{template.path}: the answer's '#### {format_value(final)}' does not equal #answer {format_value(gold)} for values {values}")
    question = render_question(template, values, original, keep)
    return Instance(values, question, render_answer(template, values, rng), gold)


def instance_rng(seed: int, template: Template, instance: int) -> random.Random:
    # A string seed is hashed by `random` itself (sha512), stable across runs and platforms.
    return random.Random(f"gsm-symbolic:{seed}:{template.id_shuffled}:{instance}")


def generate_rows(template: Template, instances: int, seed: int, original: bool = False,
                  variant: str = "symbolic", max_tries: int = DEFAULT_MAX_TRIES) -> list[dict[str, Any]]:
    """Rows in the official generated-data format plus `variant` and `values`.

    `variant` picks what is re-sampled (see `held_variables`); "noop" rows hold the symbolic
    instance with one inconsequential clause inserted before the question sentence (also given
    as `noop_clause`), drawn from its own random stream so the instance itself is unchanged.
    """
    check_variant(variant)
    rows = []
    for number in range(instances):
        drawn = draw_instance(template, instance_rng(seed, template, number), original, max_tries, variant)
        question, extra = drawn.question, {}
        if variant == "noop":
            noop_rng = random.Random(f"gsm-symbolic-noop:{seed}:{template.id_shuffled}:{number}")
            clause = noop_clause(drawn.values, noop_rng)
            question = insert_before_question(question, clause)
            extra = {"noop_clause": clause}
        rows.append({
            "id": template.id_shuffled,
            "instance": number,
            "question": question,
            "answer": drawn.answer,
            "original_id": template.id_orig,
            "original_question": template.question,
            "original_answer": template.answer,
            "variant": variant,
            "values": {name: json_value(value) for name, value in drawn.values.items()},
            **extra,
        })
    return rows
