"""Binding drawn items to variables: what a `$` variable takes from a `(text, number)` pair, and
how a domain's value (a list or range to pick from, or a value as is) becomes one or more variables.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

from plugins.gsm_symbolic.rendering import format_value
from plugins.gsm_symbolic.template import Assignment


def numeric_value(value: Any) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        value = value[1]
    if isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
        return float(value)
    return None


def store(name: str, numeric: bool, item: Any, environment: dict[str, Any], displays: dict[str, str]) -> None:
    """Bind one variable: a `$` variable drawn as `(text, number)` takes the number, its text shown."""
    if numeric and isinstance(item, tuple) and len(item) == 2 and numeric_value(item[1]) is not None:
        environment[name] = item[1]
        displays[name] = item[0] if isinstance(item[0], str) else format_value(item[0])
    else:
        environment[name] = item
        displays.pop(name, None)


def bind(assignment: Assignment, value: Any, environment: dict[str, Any], displays: dict[str, str],
          rng: random.Random) -> None:
    """A domain that evaluates to a list or range is sampled from; a single value is used as is."""
    location = assignment.domain.location
    count = len(assignment.names)
    if count == 1:
        if isinstance(value, (list, range)):
            if len(value) == 0:
                raise location.error(f"domain {assignment.domain.text!r} is empty")
            value = rng.choice(value)
        items = [value]
    elif isinstance(value, (list, tuple)) and len(value) == count:
        items = list(value)
    elif isinstance(value, (list, range)) and len(value) > count:
        items = rng.sample(value, count)
    else:
        raise location.error(f"cannot assign {count} variables from {assignment.domain.text!r}")
    for name, numeric, item in zip(assignment.names, assignment.numeric, items):
        store(name, numeric, item, environment, displays)
