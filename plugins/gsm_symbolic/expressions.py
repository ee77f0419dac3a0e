"""A restricted evaluator for template expressions (domains, conditions, answers, placeholders).

Template text is never given to `eval`/`exec`: it is parsed with `ast.parse(mode="eval")` and the
tree is walked node by node over a whitelist (literals, names, arithmetic, comparisons, boolean
operators, conditional expressions, subscripts, and calls to the named helpers in `HELPER_NAMES`).
Everything else (attribute access beyond `np.`/`np.random.`, dunders, lambdas, comprehensions,
starred arguments, f-strings...) is refused with a `TemplateError` naming the file and line.
Sizes are capped so that a template cannot build huge numbers or sequences either.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from plugins.gsm_symbolic.errors import Location, TemplateError

MAX_INTEGER_BITS = 256  # far above any GSM quantity, far below what could exhaust memory
MAX_EXPONENT = 256
MAX_SEQUENCE_LENGTH = 100_000
MAX_RANGE_LENGTH = 10_000_000  # ranges are lazy; only materialised lists are capped lower
MAX_ROUND_DIGITS = 30
DECIMAL_TEXT = re.compile(r"^\s*-?\d{1,30}(\.\d{1,30})?(/\d{1,30})?\s*$")
FLOAT_DIGITS = 10  # rounding that removes binary noise such as 0.1 + 0.2 = 0.30000000000000004

BINARY_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
UNARY_OPERATORS: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_,
}
COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


# ---- domain helpers: every random one takes an explicit `random.Random` for determinism ----

def _population(values: Any) -> list[Any] | range:
    if isinstance(values, range):
        if len(values) > MAX_RANGE_LENGTH:
            raise ValueError(f"range holds {len(values)} values (limit {MAX_RANGE_LENGTH})")
        return values
    if isinstance(values, (list, tuple)):
        return list(values)
    raise TypeError(f"expected a list or range, got {type(values).__name__}")


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


def randint(rng: random.Random, low: int, high: int | None = None) -> int:
    """numpy's `np.random.randint`: `high` excluded; one argument means [0, low)."""
    if high is None:
        low, high = 0, low
    return rng.randrange(low, high)


def arange(start: float, stop: float | None = None, step: float = 1) -> list[Any]:
    """numpy's `arange` as a list: `stop` excluded; floats rounded so 0.1 steps stay clean."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange step must not be zero")
    count = max(0, math.ceil((stop - start) / step))
    if count > MAX_SEQUENCE_LENGTH:
        raise ValueError(f"arange would hold {count} values (limit {MAX_SEQUENCE_LENGTH})")
    values = [start + index * step for index in range(count)]
    return fix_floats(values)


def frange(start: float, stop: float, step: float = 1) -> list[Any]:
    """Float range with `stop` excluded (the same as `arange` with three arguments)."""
    return arange(start, stop, step)


def numbers_within(low: int, high: int) -> range:
    """The integers from `low` to `high`, both included."""
    return _range(low, high + 1)


def fix_floats(value: Any) -> Any:
    """Round away binary float noise (recursively in lists and tuples); integral floats stay floats."""
    if isinstance(value, float):
        return round(value, FLOAT_DIGITS)
    if isinstance(value, (list, tuple)):
        return type(value)(fix_floats(item) for item in value)
    return value


def is_int(value: Any) -> bool:
    """True for integers, Fractions with denominator 1, and floats within rounding noise of one."""
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
    if b == 0:
        return False
    if isinstance(a, float) or isinstance(b, float):
        return is_int(a / b)
    return is_int(Fraction(a) / Fraction(b))


def _check_count(count: int) -> None:
    if count > MAX_SEQUENCE_LENGTH:
        raise ValueError(f"{count} items asked for (limit {MAX_SEQUENCE_LENGTH})")


def _fraction(numerator: Any = 0, denominator: Any = None) -> Fraction:
    # Fraction("1e999999999") would compute 10**999999999; only plain decimal text is accepted.
    for argument in (numerator, denominator):
        if isinstance(argument, str) and not DECIMAL_TEXT.match(argument):
            raise ValueError(f"Fraction text {argument!r} must look like 3, 1.5 or 2/3")
    return Fraction(numerator) if denominator is None else Fraction(numerator, denominator)


def _round(value: Any, digits: int | None = None) -> Any:
    # round(5, -10**9) would compute 10**10**9.
    if digits is not None and abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round to {digits} digits is outside +-{MAX_ROUND_DIGITS}")
    return round(value) if digits is None else round(value, digits)


def _range(*arguments: int) -> range:
    result = range(*arguments)
    if len(result) > MAX_RANGE_LENGTH:
        raise ValueError(f"range would hold {len(result)} values (limit {MAX_RANGE_LENGTH})")
    return result


RANDOM_HELPERS: dict[str, Callable[..., Any]] = {
    "sample": sample, "sample_sequential": sample_sequential, "shuffle_list": shuffle_list,
    "np.random.randint": randint,
}
PURE_HELPERS: dict[str, Callable[..., Any]] = {
    "range": _range, "arange": arange, "np.arange": arange, "frange": frange,
    "numbers_within": numbers_within, "fix_floats": fix_floats, "is_int": is_int, "divides": divides,
    "Fraction": _fraction, "int": int, "float": float, "round": _round, "abs": abs, "min": min,
    "max": max, "len": len, "sum": sum, "str": str,
}
HELPER_NAMES: frozenset[str] = frozenset(RANDOM_HELPERS) | frozenset(PURE_HELPERS)


# ---- static checking ----

def _dotted_name(node: ast.expr) -> str | None:
    """`np.random.randint` for an attribute chain over a bare name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Tuple, ast.List, ast.BinOp, ast.UnaryOp,
    ast.Compare, ast.BoolOp, ast.IfExp, ast.Subscript, ast.Slice, ast.Call, ast.And, ast.Or,
    *BINARY_OPERATORS, *UNARY_OPERATORS, *COMPARISONS,
)


@dataclass(frozen=True)
class Expression:
    """A parsed and checked template expression; `names` are the free names it reads."""

    text: str
    tree: ast.Expression
    location: Location
    names: frozenset[str]


def parse_expression(text: str, location: Location) -> Expression:
    """Parse `text` and check it against the whitelist, or raise TemplateError at `location`."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise location.error(f"cannot parse expression {text.strip()!r}: {error.msg}") from None
    # Node kinds first, so a lambda or comprehension is named as such even inside a call.
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES) and not isinstance(node, ast.Attribute):
            raise location.error(f"{type(node).__name__} is not allowed in template expressions: {text.strip()!r}")
    names: set[str] = set()
    for node in ast.walk(tree):
        # Complex numbers, bytes and `...` have no place in a word problem.
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, type(None))):
            raise location.error(f"constant {node.value!r} is not allowed: {text.strip()!r}")
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise location.error(f"name {node.id!r} is not allowed (leading underscore): {text.strip()!r}")
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            dotted = _dotted_name(node)
            if dotted is None or "__" in dotted:
                raise location.error(f"attribute access is not allowed: {text.strip()!r}")
        elif isinstance(node, ast.Call):
            dotted = _dotted_name(node.func)
            if dotted is None or dotted not in HELPER_NAMES:
                shown = dotted or type(node.func).__name__
                raise location.error(f"unknown function {shown!r}; allowed: {', '.join(sorted(HELPER_NAMES))}")
            if any(isinstance(argument, ast.Starred) for argument in node.args) or node.keywords:
                raise location.error(f"only plain positional arguments are allowed: {text.strip()!r}")
    # Attribute chains are only legal as the function of a helper call (checked above); a bare
    # `np.random` or `np.arange` used as a value would otherwise slip through.
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not any(
                isinstance(parent, ast.Call) and _is_within(node, parent.func) for parent in ast.walk(tree)):
                raise location.error(f"attribute access is not allowed: {text.strip()!r}")
    helper_roots = {name.split(".")[0] for name in HELPER_NAMES}
    return Expression(text.strip(), tree, location, frozenset(names - helper_roots))


def _is_within(node: ast.AST, root: ast.AST) -> bool:
    return any(child is node for child in ast.walk(root))


# ---- evaluation ----

def _check_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INTEGER_BITS:
        raise ValueError(f"number too large (over {MAX_INTEGER_BITS} bits)")
    if isinstance(value, Fraction) and max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_INTEGER_BITS:
        raise ValueError(f"fraction too large (over {MAX_INTEGER_BITS} bits)")
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_SEQUENCE_LENGTH:
        raise ValueError(f"sequence too long (over {MAX_SEQUENCE_LENGTH} items)")
    return value


def _safe_binary(kind: type, left: Any, right: Any) -> Any:
    # Refuse before computing: `10**10**10` or `"a" * 10**12` would exhaust memory first.
    if kind is ast.Pow and isinstance(right, (int, float, Fraction)) and not isinstance(right, bool):
        if abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} exceeds the limit of {MAX_EXPONENT}")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() * abs(right) > MAX_INTEGER_BITS:
            raise ValueError(f"power would exceed {MAX_INTEGER_BITS} bits")
    if kind is ast.Mod and isinstance(left, str):
        raise ValueError("%-formatting of strings is not allowed")
    if kind is ast.Mult:
        for sequence, count in ((left, right), (right, left)):
            if (isinstance(sequence, (str, list, tuple)) and isinstance(count, int)
                    and len(sequence) * count > MAX_SEQUENCE_LENGTH):
                    raise ValueError(f"sequence too long (over {MAX_SEQUENCE_LENGTH} items)")
    return _check_size(BINARY_OPERATORS[kind](left, right))


class _Evaluator:
    """Walks a checked tree; every node type reaching here was accepted by `parse_expression`."""

    def __init__(self, environment: Mapping[str, Any], rng: random.Random) -> None:
        self.environment = environment
        self.rng = rng

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in self.environment:
                raise NameError(f"unknown name {node.id!r}")
            return self.environment[node.id]
        if isinstance(node, ast.Tuple):
            return tuple(self.visit(item) for item in node.elts)
        if isinstance(node, ast.List):
            return [self.visit(item) for item in node.elts]
        if isinstance(node, ast.BinOp):
            return _safe_binary(type(node.op), self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.UnaryOp):
            return UNARY_OPERATORS[type(node.op)](self.visit(node.operand))
        if isinstance(node, ast.BoolOp):
            return self._boolean(node)
        if isinstance(node, ast.Compare):
            left = self.visit(node.left)
            for comparison, right_node in zip(node.ops, node.comparators):
                right = self.visit(right_node)
                if not COMPARISONS[type(comparison)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)
        if isinstance(node, ast.Subscript):
            return _check_size(self.visit(node.value)[self.visit(node.slice)])
        if isinstance(node, ast.Slice):
            parts = (node.lower, node.upper, node.step)
            return slice(*(None if part is None else self.visit(part) for part in parts))
        if isinstance(node, ast.Call):
            name = _dotted_name(node.func)
            arguments = [self.visit(argument) for argument in node.args]
            if name in RANDOM_HELPERS:
                return _check_size(RANDOM_HELPERS[name](self.rng, *arguments))
            return _check_size(PURE_HELPERS[name](*arguments))  # type: ignore[index]
        raise ValueError(f"{type(node).__name__} is not allowed")

    def _boolean(self, node: ast.BoolOp) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.visit(operand)
            # Short-circuit like Python, so `b != 0 and a / b > 2` is safe.
            if isinstance(node.op, ast.And) and not value:
                return value
            if isinstance(node.op, ast.Or) and value:
                return value
        return value


def evaluate(expression: Expression, environment: Mapping[str, Any], rng: random.Random) -> Any:
    """The value of `expression` with names from `environment`; any failure is a TemplateError."""
    try:
        return _Evaluator(environment, rng).visit(expression.tree)
    except TemplateError:
        raise
    except (ArithmeticError, ValueError, TypeError, NameError, IndexError, KeyError, OverflowError) as error:
        raise expression.location.error(f"cannot evaluate {expression.text!r}: {error}") from None


def evaluate_text(text: str, environment: Mapping[str, Any], rng: random.Random | None = None,
                  location: Location | None = None) -> Any:
    """Parse, check and evaluate in one step (for tests and one-off expressions)."""
    location = location or Location("<expression>", 1)
    return evaluate(parse_expression(text, location), environment, rng or random.Random(0))
