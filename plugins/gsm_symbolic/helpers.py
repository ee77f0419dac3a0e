"""The functions template expressions may call, and the size limits that keep them cheap.

Every random helper takes an explicit `random.Random` first, so instances are reproducible.
Sizes are checked before work is done: a template cannot build a huge number, a huge (or hugely
nested) sequence, or ask for a costly loop, whatever it writes.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

MAX_INTEGER_BITS = 256  # far above any GSM quantity, far below what could exhaust memory
MAX_EXPONENT = 256
MAX_SEQUENCE_LENGTH = 100_000  # items of a materialised value, counted through nested lists
MAX_VALUE_DEPTH = 32  # lists inside lists
MAX_RANGE_LENGTH = 10_000_000  # ranges are lazy; only materialised lists are capped lower
MAX_ROUND_DIGITS = 30
DECIMAL_TEXT = re.compile(r"^\s*-?\d{1,30}(\.\d{1,30})?(/\d{1,30})?\s*$")
FLOAT_DIGITS = 10  # rounding that removes binary noise such as 0.1 + 0.2 = 0.30000000000000004


class LimitError(ValueError):
    """A size limit refused a value: the template, not one draw, is at fault."""


def measure(value: Any) -> int:
    """How many items `value` holds, counted through nested lists and tuples (1 for a scalar).

    Refuses (ValueError) past MAX_SEQUENCE_LENGTH items or MAX_VALUE_DEPTH levels, stopping as soon
    as it knows, so measuring `[[0] * 10**5] * 10**5` costs no more than the limit.
    """
    if isinstance(value, str):
        if len(value) > MAX_SEQUENCE_LENGTH:
            raise LimitError(f"text too long (over {MAX_SEQUENCE_LENGTH} characters)")
        return 1
    if not isinstance(value, (list, tuple)):
        return 1
    total = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        sequence, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise LimitError(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
        total += len(sequence)
        if total > MAX_SEQUENCE_LENGTH:
            raise LimitError(f"sequence too long (over {MAX_SEQUENCE_LENGTH} items, nested ones counted)")
        for item in sequence:
            if isinstance(item, (list, tuple)):
                stack.append((item, depth + 1))
    return total


def check_value(value: Any) -> Any:
    """`value` itself if it is within the limits, else ValueError."""
    kind = type(value)
    if kind is int:
        if value.bit_length() > MAX_INTEGER_BITS:
            raise LimitError(f"number too large (over {MAX_INTEGER_BITS} bits)")
    elif kind is Fraction:
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_INTEGER_BITS:
            raise LimitError(f"fraction too large (over {MAX_INTEGER_BITS} bits)")
    elif kind in (list, tuple, str):
        measure(value)
    return value


def _population(values: Any) -> list[Any] | tuple[Any, ...] | range:
    if isinstance(values, range):
        if len(values) > MAX_RANGE_LENGTH:
            raise LimitError(f"range holds {len(values)} values (limit {MAX_RANGE_LENGTH})")
        return values
    if isinstance(values, (list, tuple)):
        return values
    raise TypeError(f"expected a list or range, got {type(values).__name__}")


def _check_count(count: Any) -> None:
    if not isinstance(count, int) or isinstance(count, bool):
        raise TypeError(f"a count must be an integer, got {count!r}")
    if count > MAX_SEQUENCE_LENGTH:
        raise LimitError(f"{count} items asked for (limit {MAX_SEQUENCE_LENGTH})")


def sample(rng: random.Random, values: Any, k: int | None = None) -> Any:
    """One element of `values` (k=None), or `k` distinct elements in random order."""
    population = _population(values)
    if k is None:
        return rng.choice(population)
    _check_count(k)
    return list(rng.sample(population, k))


def sample_sequential(rng: random.Random, values: Any, k: int) -> list[Any]:
    """`k` distinct elements of `values`, kept in their original order (e.g. increasing numbers)."""
    population = _population(values)
    _check_count(k)
    positions = sorted(rng.sample(range(len(population)), k))
    return [population[position] for position in positions]


def shuffle_list(rng: random.Random, values: Any) -> list[Any]:
    population = _population(values)
    _check_count(len(population))
    shuffled = list(population)
    rng.shuffle(shuffled)
    return shuffled


def randint(rng: random.Random, low: int, high: int | None = None, size: int | None = None) -> Any:
    """numpy's `np.random.randint`: `high` excluded; one argument means [0, low); `size` gives a list
    of that many independent draws (a domain that is a list is then sampled from, one of them)."""
    if high is None:
        low, high = 0, low
    if size is None:
        return rng.randrange(low, high)
    _check_count(size)
    return [rng.randrange(low, high) for _ in range(size)]


def arange(start: float, stop: float | None = None, step: float = 1) -> list[Any]:
    """numpy's `arange` as a list: `stop` excluded; floats rounded so 0.1 steps stay clean."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange step must not be zero")
    count = max(0, math.ceil((stop - start) / step))
    if count > MAX_SEQUENCE_LENGTH:
        raise LimitError(f"arange would hold {count} values (limit {MAX_SEQUENCE_LENGTH})")
    return fix_floats([start + index * step for index in range(count)])


def frange(start: float, stop: float, step: float = 1) -> list[Any]:
    """Float range with `stop` excluded (the same as `arange` with three arguments)."""
    return arange(start, stop, step)


def numbers_within(low: int, high: int) -> range:
    """The integers from `low` to `high`, both included."""
    return make_range(low, high + 1)


def fix_floats(value: Any) -> Any:
    """Round away binary float noise (recursively in lists and tuples); integral floats stay floats."""
    if isinstance(value, float):
        return round(value, FLOAT_DIGITS)
    if isinstance(value, (list, tuple)):
        measure(value)
        return type(value)(fix_floats(item) for item in value)
    return value


def is_int(value: Any) -> bool:
    """True for integers, Fractions with denominator 1, and floats within rounding noise of one."""
    kind = type(value)
    if kind is int:
        return True
    if kind is float:
        return math.isfinite(value) and abs(value - round(value)) < 10 ** -FLOAT_DIGITS
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, Fraction):
        return value.denominator == 1
    if isinstance(value, float):
        return math.isfinite(value) and abs(value - round(value)) < 10 ** -FLOAT_DIGITS
    return False


def divides(a: Any, b: Any) -> bool:
    """True when `a` is a multiple of `b` (the order the official templates use)."""
    if type(a) is int and type(b) is int:
        return b != 0 and a % b == 0
    if b == 0:
        return False
    if isinstance(a, float) or isinstance(b, float):
        return is_int(a / b)
    return is_int(Fraction(a) / Fraction(b))


def make_fraction(numerator: Any = 0, denominator: Any = None) -> Fraction:
    # Fraction("1e999999999") would compute 10**999999999; only plain decimal text is accepted.
    for argument in (numerator, denominator):
        if isinstance(argument, str) and not DECIMAL_TEXT.match(argument):
            raise ValueError(f"Fraction text {argument!r} must look like 3, 1.5 or 2/3")
    if isinstance(numerator, float) and denominator is None:
        # Fraction(0.1) is 3602879701896397/36028797018963968; the template means 1/10.
        return Fraction(repr(round(numerator, FLOAT_DIGITS)))
    return Fraction(numerator) if denominator is None else Fraction(numerator, denominator)


def format_fraction(value: Any) -> str:
    """A number as a worked answer writes a fraction: `3/2`, `4` (integral), or the plain number."""
    if isinstance(value, float) and is_int(value):
        return str(int(round(value)))
    if isinstance(value, (int, Fraction)) and not isinstance(value, bool):
        value = Fraction(value)
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    return str(value)


def rounded(value: Any, digits: int | None = None) -> Any:
    # round(5, -10**9) would compute 10**10**9.
    if digits is not None and abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round to {digits} digits is outside +-{MAX_ROUND_DIGITS}")
    return round(value) if digits is None else round(value, digits)


def make_range(*arguments: int) -> range:
    result = range(*arguments)
    if len(result) > MAX_RANGE_LENGTH:
        raise LimitError(f"range would hold {len(result)} values (limit {MAX_RANGE_LENGTH})")
    return result


def make_list(values: Any = ()) -> list[Any]:
    """`list(...)` of a range, list, tuple or text, refused before it would exceed the size limit."""
    if isinstance(values, range) and len(values) > MAX_SEQUENCE_LENGTH:
        raise LimitError(f"list of {len(values)} values (limit {MAX_SEQUENCE_LENGTH})")
    if not isinstance(values, (range, list, tuple, str)):
        raise TypeError(f"list() of {type(values).__name__}")
    return list(values)


def contains(container: Any, item: Any) -> bool:
    """`item in container`; for a range in constant time whatever the item (Python scans a range
    for a float, so `0.5 in range(10**7)` would cost ten million steps)."""
    if isinstance(container, range):
        if isinstance(item, bool) or not isinstance(item, (int, float, Fraction)) or not is_int(item):
            return False
        return int(round(item)) in container
    return item in container


def size_of(value: Any) -> int:
    """The work a helper does on `value`: its length for sequences and ranges, else 1."""
    if isinstance(value, (list, tuple, str, range)):
        return len(value) + 1
    return 1


def safe_power(left: Any, right: Any) -> Any:
    # Refuse before computing: `10**10**10` would exhaust memory first.
    if isinstance(right, (int, float, Fraction)) and not isinstance(right, bool):
        if abs(right) > MAX_EXPONENT:
            raise LimitError(f"exponent {right} exceeds the limit of {MAX_EXPONENT}")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() * abs(right) > MAX_INTEGER_BITS:
            raise LimitError(f"power would exceed {MAX_INTEGER_BITS} bits")
    return left ** right


def safe_modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        raise ValueError("%-formatting of strings is not allowed")
    return left % right


def safe_multiply(left: Any, right: Any) -> Any:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and count > 0:
            # `[[0] * 10**5] * 10**5` is refused here, before ten billion items exist.
            if measure(sequence) * count > MAX_SEQUENCE_LENGTH or len(sequence) * count > MAX_SEQUENCE_LENGTH:
                raise LimitError(f"sequence too long (over {MAX_SEQUENCE_LENGTH} items)")
    return left * right


RANDOM_HELPERS: dict[str, Callable[..., Any]] = {
    "sample": sample, "sample_sequential": sample_sequential, "shuffle_list": shuffle_list,
    "np.random.randint": randint,
}
PURE_HELPERS: dict[str, Callable[..., Any]] = {
    "range": make_range, "arange": arange, "np.arange": arange, "frange": frange,
    "numbers_within": numbers_within, "fix_floats": fix_floats, "is_int": is_int, "divides": divides,
    "Fraction": make_fraction, "int": int, "float": float, "round": rounded, "abs": abs, "min": min,
    "max": max, "len": len, "sum": sum, "str": str, "list": make_list, "format_frac": format_fraction,
}
HELPER_NAMES: frozenset[str] = frozenset(RANDOM_HELPERS) | frozenset(PURE_HELPERS)
