"""A restricted evaluator for template expressions (domains, conditions, answers, placeholders).

Template text is never given to `eval`/`exec`: it is parsed with `ast.parse(mode="eval")`, the
tree is checked node by node against a whitelist (literals, names, arithmetic, comparisons,
boolean operators, conditional expressions, subscripts, and calls to the helpers of `helpers`),
and the checked tree is turned into a chain of Python closures, one per node, built once per
template. Everything else (attribute access beyond `np.`/`np.random.`, dunders, lambdas,
comprehensions, starred arguments, f-strings...) is refused with a `TemplateError` naming the file
and line, and so are expressions that are too long or too deeply nested to be a word problem's.

Every evaluation is charged to a `Budget`: one step per node, plus the length of every sequence a
helper or operator walks. A template whose draws would cost more than its budget is refused rather
than left running (a costly condition times thousands of retries is the usual way to get there).
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from plugins.gsm_symbolic.errors import Location, TemplateError
from plugins.gsm_symbolic.helpers import (
    HELPER_NAMES, MAX_INTEGER_BITS, PURE_HELPERS, RANDOM_HELPERS, LimitError, check_value, contains, divides,
    is_int, safe_modulo, safe_multiply, safe_power, size_of,
)

__all__ = ["Budget", "Expression", "evaluate", "evaluate_text", "parse_expression", "divides", "is_int"]

MAX_EXPRESSION_LENGTH = 2_000  # the official templates' longest is under 300 characters
MAX_DEPTH = 64  # nesting of the parsed tree; the official templates stay under 15
MAX_NODES = 1_000  # the official templates stay under 100
DEFAULT_BUDGET = 3_000_000  # steps per template: about a second of evaluation on a slow machine
NUMERIC_VARIABLE = re.compile(r"\$(?=[A-Za-z_])")
QUOTED = re.compile(r"'[^'\\]*'|\"[^\"\\]*\"")

Environment = Mapping[str, Any]


class BudgetExceeded(Exception):
    """Raised inside evaluation when the template's step budget is spent."""


class FatalTemplateError(TemplateError):
    """A template is refused as a whole, never retried draw by draw: a size limit or its budget."""


class BudgetError(FatalTemplateError):
    """A template spent its evaluation budget."""


@dataclass
class Budget:
    """Steps a template may still spend; `spent` is what it has used."""

    limit: int = DEFAULT_BUDGET
    spent: int = 0

    def charge(self, steps: int) -> None:
        self.spent += steps
        if self.spent > self.limit:
            raise BudgetExceeded


@dataclass
class Context:
    """What a compiled expression needs besides the variables: the random stream and the budget."""

    rng: random.Random
    budget: Budget = field(default_factory=Budget)


BINARY_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: safe_multiply, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: safe_modulo, ast.Pow: safe_power,
}
UNARY_OPERATORS: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_,
}
COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: contains(b, a),
    ast.NotIn: lambda a, b: not contains(b, a),
}
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
    function: Callable[[Environment, Context], Any] = field(compare=False, repr=False, default=None)  # type: ignore[assignment]
    steps: int = 1  # nodes: what one evaluation is charged, before sequence work


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


def strip_numeric_marks(text: str) -> str:
    """`$ans` -> `ans` outside quoted text: answers and conditions may name `$` variables so."""
    pieces, position = [], 0
    for quoted in QUOTED.finditer(text):
        pieces.append(NUMERIC_VARIABLE.sub("", text[position:quoted.start()]))
        pieces.append(quoted.group(0))
        position = quoted.end()
    pieces.append(NUMERIC_VARIABLE.sub("", text[position:]))
    return "".join(pieces)


def _depth_and_size(tree: ast.AST) -> tuple[int, int]:
    deepest, count, stack = 0, 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH or count > MAX_NODES:
            break
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest, count


def _check_tree(tree: ast.Expression, shown: str, location: Location) -> set[str]:
    # Node kinds first, so a lambda or comprehension is named as such even inside a call.
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES) and not isinstance(node, ast.Attribute):
            raise location.error(f"{type(node).__name__} is not allowed in template expressions: {shown!r}")
    names: set[str] = set()
    function_parts: set[int] = set()  # ids of the Attribute nodes that spell a called helper
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, type(None))):
            raise location.error(f"constant {node.value!r} is not allowed: {shown!r}")
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise location.error(f"name {node.id!r} is not allowed (leading underscore): {shown!r}")
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            dotted = _dotted_name(node)
            if dotted is None or "__" in dotted:
                raise location.error(f"attribute access is not allowed: {shown!r}")
        elif isinstance(node, ast.Call):
            dotted = _dotted_name(node.func)
            if dotted is None or dotted not in HELPER_NAMES:
                raise location.error(f"unknown function {dotted or type(node.func).__name__!r}; "
                                     f"allowed: {', '.join(sorted(HELPER_NAMES))}")
            if any(isinstance(argument, ast.Starred) for argument in node.args) or node.keywords:
                raise location.error(f"only plain positional arguments are allowed: {shown!r}")
            part = node.func
            while isinstance(part, ast.Attribute):
                function_parts.add(id(part))
                part = part.value
    # A bare `np.random` or `np.arange` used as a value (not called) would otherwise slip through.
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in function_parts:
            raise location.error(f"attribute access is not allowed: {shown!r}")
    return names


def parse_expression(text: str, location: Location) -> Expression:
    """Parse `text`, check it against the whitelist and compile it, or raise TemplateError at `location`."""
    source = strip_numeric_marks(text.strip())
    shown = source if len(source) <= 80 else source[:77] + "..."
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise location.error(f"expression of {len(source):,} characters (limit {MAX_EXPRESSION_LENGTH}): {shown!r}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise location.error(f"cannot parse expression {shown!r}: {error.msg}") from None
    except (RecursionError, MemoryError):
        raise location.error(f"expression nested too deeply to parse: {shown!r}") from None
    depth, size = _depth_and_size(tree)
    if depth > MAX_DEPTH or size > MAX_NODES:
        raise location.error(f"expression too large or too deeply nested (limits: {MAX_NODES} nodes, "
                             f"depth {MAX_DEPTH}): {shown!r}")
    names = _check_tree(tree, shown, location)
    helper_roots = {name.split(".")[0] for name in HELPER_NAMES}
    return Expression(source, tree, location, frozenset(names - helper_roots), _compile(tree.body), size)


# ---- compiling a checked tree into closures ----

def _compile(node: ast.AST) -> Callable[[Environment, Context], Any]:
    compiler = _COMPILERS.get(type(node))
    if compiler is None:  # unreachable after _check_tree; kept so a gap fails loudly, not silently
        raise ValueError(f"{type(node).__name__} is not allowed")
    return compiler(node)


def _constant(node: ast.Constant) -> Callable[[Environment, Context], Any]:
    value = node.value
    return lambda environment, context: value


def _name(node: ast.Name) -> Callable[[Environment, Context], Any]:
    name = node.id

    def read(environment: Environment, context: Context) -> Any:
        try:
            return environment[name]
        except KeyError:
            raise NameError(f"unknown name {name!r}") from None
    return read


def _sequence(node: ast.Tuple | ast.List) -> Callable[[Environment, Context], Any]:
    items = [_compile(item) for item in node.elts]
    kind = tuple if isinstance(node, ast.Tuple) else list

    def build(environment: Environment, context: Context) -> Any:
        return check_value(kind(item(environment, context) for item in items))
    return build


INTEGER_LIMIT = 1 << MAX_INTEGER_BITS
NUMBERS = (int, float, Fraction)
FAST_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
                  ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _binary(node: ast.BinOp) -> Callable[[Environment, Context], Any]:
    left, right, apply = _compile(node.left), _compile(node.right), BINARY_OPERATORS[type(node.op)]
    fast = FAST_OPERATORS.get(type(node.op))

    def general(a: Any, b: Any, context: Context) -> Any:
        result = apply(a, b)
        if type(result) in (list, tuple, str):
            context.budget.charge(len(result))
        return check_value(result)

    if fast is None:
        return lambda environment, context: general(left(environment, context), right(environment, context), context)

    # The common case, numbers on both sides, skips the general checks: only an integer or a
    # fraction can grow past the limit, and a comparison or two tells.
    def combine(environment: Environment, context: Context) -> Any:
        a, b = left(environment, context), right(environment, context)
        if type(a) in NUMBERS and type(b) in NUMBERS:
            result = fast(a, b)
            kind = type(result)
            if kind is int:
                if not -INTEGER_LIMIT < result < INTEGER_LIMIT:
                    raise LimitError(f"number too large (over {MAX_INTEGER_BITS} bits)")
            elif kind is Fraction and (result.numerator.bit_length() > MAX_INTEGER_BITS
                                       or result.denominator.bit_length() > MAX_INTEGER_BITS):
                raise LimitError(f"fraction too large (over {MAX_INTEGER_BITS} bits)")
            return result
        return general(a, b, context)
    return combine


def _unary(node: ast.UnaryOp) -> Callable[[Environment, Context], Any]:
    operand, apply = _compile(node.operand), UNARY_OPERATORS[type(node.op)]
    return lambda environment, context: apply(operand(environment, context))


def _boolean(node: ast.BoolOp) -> Callable[[Environment, Context], Any]:
    operands = [_compile(value) for value in node.values]
    is_and = isinstance(node.op, ast.And)

    def decide(environment: Environment, context: Context) -> Any:
        value: Any = None
        for operand in operands:
            value = operand(environment, context)
            # Short-circuit like Python, so `b != 0 and a / b > 2` is safe.
            if is_and != bool(value):
                return value
        return value
    return decide


def _compare(node: ast.Compare) -> Callable[[Environment, Context], Any]:
    first = _compile(node.left)
    steps = [(COMPARISONS[type(comparison)], _compile(right)) for comparison, right in zip(node.ops, node.comparators)]

    def compare(environment: Environment, context: Context) -> bool:
        left = first(environment, context)
        for test, right_function in steps:
            right = right_function(environment, context)
            if isinstance(right, (list, tuple, str)):
                context.budget.charge(len(right))
            if not test(left, right):
                return False
            left = right
        return True
    return compare


def _conditional(node: ast.IfExp) -> Callable[[Environment, Context], Any]:
    test, body, orelse = _compile(node.test), _compile(node.body), _compile(node.orelse)
    return lambda environment, context: (body if test(environment, context) else orelse)(environment, context)


def _subscript(node: ast.Subscript) -> Callable[[Environment, Context], Any]:
    value, index = _compile(node.value), _compile(node.slice)

    def pick(environment: Environment, context: Context) -> Any:
        container, key = value(environment, context), index(environment, context)
        if type(container) in NUMBERS and key == 1:
            # A `$` variable drawn as (text, number) holds the number; some official templates still
            # write `mult[1]` for it, as if it held the pair.
            return container
        result = container[key]
        if isinstance(result, (list, tuple, str)):
            context.budget.charge(len(result))
        return result
    return pick


def _slice(node: ast.Slice) -> Callable[[Environment, Context], Any]:
    parts = [None if part is None else _compile(part) for part in (node.lower, node.upper, node.step)]
    return lambda environment, context: slice(*(None if part is None else part(environment, context) for part in parts))


def _call(node: ast.Call) -> Callable[[Environment, Context], Any]:
    name = _dotted_name(node.func)
    arguments = [_compile(argument) for argument in node.args]
    random_helper = RANDOM_HELPERS.get(name)  # type: ignore[arg-type]
    helper = PURE_HELPERS.get(name)  # type: ignore[arg-type]

    def call(environment: Environment, context: Context) -> Any:
        values = [argument(environment, context) for argument in arguments]
        # Helpers walk their arguments (sum, min, list(range(...))...): charge what they walk.
        steps = len(values)
        for value in values:
            if type(value) not in NUMBERS:
                steps += size_of(value)
        context.budget.charge(steps)
        if random_helper is not None:
            result = random_helper(context.rng, *values)
        else:
            result = helper(*values)  # type: ignore[misc]
        kind = type(result)
        if kind is bool or kind is float:
            return result
        if kind in (list, tuple, str):
            context.budget.charge(len(result))
        return check_value(result)
    return call


_COMPILERS: dict[type, Callable[[Any], Callable[[Environment, Context], Any]]] = {
    ast.Constant: _constant, ast.Name: _name, ast.Tuple: _sequence, ast.List: _sequence,
    ast.BinOp: _binary, ast.UnaryOp: _unary, ast.BoolOp: _boolean, ast.Compare: _compare,
    ast.IfExp: _conditional, ast.Subscript: _subscript, ast.Slice: _slice, ast.Call: _call,
}


def sub_expression(parent: Expression, node: ast.expr) -> Expression:
    """A part of a checked expression (say a call's first argument) as an expression of its own."""
    names = frozenset(child.id for child in ast.walk(node) if isinstance(child, ast.Name)) & parent.names
    return Expression(ast.unparse(node), ast.Expression(node), parent.location, names, _compile(node),
                      sum(1 for _ in ast.walk(node)))


# ---- evaluation ----

EVALUATION_ERRORS = (ArithmeticError, ValueError, TypeError, NameError, IndexError, KeyError, OverflowError,
                     RecursionError, MemoryError, AttributeError)


def _failure(expression: Expression, error: BaseException, context: Context) -> TemplateError:
    """The TemplateError an evaluation failure becomes (fatal for the budget and the size limits)."""
    if isinstance(error, BudgetExceeded):
        return BudgetError(
            f"{expression.location}: evaluation budget reached (limit {context.budget.limit:,} steps; last expression "
            f"{expression.text[:80]!r}); the template's conditions are too costly or too rarely met")
    if isinstance(error, LimitError):
        return FatalTemplateError(f"{expression.location}: cannot evaluate {expression.text[:200]!r}: {error}")
    return expression.location.error(f"cannot evaluate {expression.text[:200]!r}: {error}")


def evaluate(expression: Expression, environment: Environment, rng: random.Random | Context,
             budget: Budget | None = None) -> Any:
    """The value of `expression` with names from `environment`; any failure is a TemplateError.

    `rng` may be a `Context` (random stream and budget together); otherwise a fresh budget is used
    unless `budget` is given.
    """
    context = rng if isinstance(rng, Context) else Context(rng, budget or Budget())
    try:
        context.budget.charge(expression.steps)
        return expression.function(environment, context)
    except TemplateError:
        raise
    except (BudgetExceeded, *EVALUATION_ERRORS) as error:
        raise _failure(expression, error, context) from None


def all_hold(conditions: list[Expression], environment: Environment, context: Context) -> bool:
    """Whether every condition is true, stopping at the first false one: `evaluate` for the
    sampler's hot loop, one try block for the lot."""
    condition = None
    try:
        for condition in conditions:
            context.budget.charge(condition.steps)
            if not condition.function(environment, context):
                return False
        return True
    except TemplateError:
        raise
    except (BudgetExceeded, *EVALUATION_ERRORS) as error:
        raise _failure(condition, error, context) from None  # type: ignore[arg-type]


def evaluate_text(text: str, environment: Environment, rng: random.Random | None = None,
                  location: Location | None = None) -> Any:
    """Parse, check and evaluate in one step (for tests and one-off expressions)."""
    location = location or Location("<expression>", 1)
    return evaluate(parse_expression(text, location), environment, rng or random.Random(0))
