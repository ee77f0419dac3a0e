"""Exact sampling for templates whose conditions independent rejection rarely meets.

The `#init` lines that the conditions read are walked level by level: each line's domain is turned
into its population (the values a draw picks from, each with its probability), every condition is
checked as soon as the lines it reads are bound, and a branch stops at the first failed one. The
leaves that pass are the valid draws, each weighted by the probability independent draws would have
given it; picking among them by weight gives exactly the distribution of rejection sampling, only
without the rejections. A condition that fixes a line's value (an equality linear in it, or
`is_int(x + rest)`) pins it: its picks are looked up, not walked. The walk has branch limits: past
them the levels already listed are kept and the remaining lines are drawn by rejection.
"""

from __future__ import annotations

import ast
import bisect
import itertools
import math
import random
from collections import Counter
from fractions import Fraction
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.expressions import Context, Expression, FatalTemplateError, all_hold, evaluate, sub_expression
from plugins.gsm_symbolic.helpers import RANDOM_HELPERS
from plugins.gsm_symbolic.template import Assignment

ENUMERATION_LIMIT = 60_000  # branches of one level walked before the listing stops at the levels done
TOTAL_LIMIT = 150_000  # branches of all levels together
PERMUTATION_LIMIT = 50_000  # ordered picks of several names from one population


class NotEnumerable(Exception):
    """The relevant lines cannot be listed (a random helper inside arithmetic, too many branches)."""


@dataclass(frozen=True)
class Solutions:
    """The valid bindings of the relevant lines, with cumulative weights for picking by weight."""

    bindings: list[tuple[tuple[Any, ...], ...]]  # per solution: per listed line, the picked items
    cumulative: list[float]
    acceptance: float  # probability that one independent draw meets the listed lines' conditions
    depth: int  # lines listed (all of them, or a prefix: the rest are drawn by rejection)

    def pick(self, rng: random.Random) -> tuple[tuple[Any, ...], ...]:
        point = rng.random() * self.cumulative[-1]  # by weight: the independent-draw probability
        return self.bindings[bisect.bisect_right(self.cumulative, point)]


@dataclass
class HeldLine:
    """A line held at its original values, as the enumeration sees it: one pick, certain."""

    binding: tuple[dict[str, Any], dict[str, str]]
    items: list = field(init=False)

    def __post_init__(self) -> None:
        values, displays = self.binding
        self.items = [(tuple((displays[name], value) if name in displays else value for name, value in values.items()), 1.0)]

    def picks(self, environment: dict[str, Any], context: Context) -> list:
        return self.items


def _has_random_call(node: ast.AST) -> bool:
    return any(isinstance(child, ast.Call) and ast.unparse(child.func) in RANDOM_HELPERS for child in ast.walk(node))


def _weighted(items: list[tuple[tuple[Any, ...], float]]) -> list[tuple[tuple[Any, ...], float]]:
    """Merge equal picks (a population such as `[...] * 3` repeats them) into one weighted branch."""
    try:
        merged: Counter = Counter()
        for item, weight in items:
            merged[item] += weight
        return list(merged.items())
    except TypeError:  # unhashable items (lists): keep every branch
        return items


class LinePopulations:
    """For one `#init` line: a function from the environment to its weighted picks, or NotEnumerable."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        body = assignment.domain.tree.body
        self.count = len(assignment.names)
        self.kind = "value"
        self.population: Expression | None = None
        self.size: Expression | None = None
        if isinstance(body, ast.Call) and ast.unparse(body.func) in RANDOM_HELPERS:
            name = ast.unparse(body.func)
            if any(_has_random_call(argument) for argument in body.args) or not body.args:
                raise NotEnumerable
            if name == "shuffle_list":
                raise NotEnumerable
            if name == "np.random.randint":
                # One of several independent uniform draws is itself uniform over [low, high).
                self.kind = "randint"
                self.population = sub_expression(assignment.domain, ast.Tuple(body.args[:2], ast.Load()))
                return
            self.kind = "sequential" if name == "sample_sequential" else "sample"
            self.population = sub_expression(assignment.domain, body.args[0])
            if len(body.args) > 1:
                self.size = sub_expression(assignment.domain, body.args[1])
            return
        if _has_random_call(body):
            # One pick from a shuffled list is one pick from the list: shuffling may stay.
            shuffles_only = all(ast.unparse(node.func) == "shuffle_list" for node in ast.walk(body)
                                if isinstance(node, ast.Call) and ast.unparse(node.func) in RANDOM_HELPERS)
            if not (shuffles_only and self.count == 1):
                raise NotEnumerable

    def picks(self, environment: dict[str, Any], context: Context) -> list[tuple[tuple[Any, ...], float]]:
        if self.kind == "value":
            value = evaluate(self.assignment.domain, environment, context)
            return self._from_value(value)
        assert self.population is not None
        population = evaluate(self.population, environment, context)
        if self.kind == "randint":
            low, high = population if len(population) == 2 and population[1] is not None else (0, population[0])
            return self._choose_one(range(low, high))
        if self.size is None:
            return self._choose_one(population)
        size = evaluate(self.size, environment, context)
        if size != self.count:
            raise NotEnumerable  # one name bound to a list of picks: listing them all is not worth it
        return self._choose_several(population, ordered=self.kind == "sample")

    def _from_value(self, value: Any) -> list[tuple[tuple[Any, ...], float]]:
        if self.count == 1:
            if isinstance(value, (list, range)):
                return self._choose_one(value)
            return [((value,), 1.0)]
        if isinstance(value, (list, tuple)) and len(value) == self.count:
            return [(tuple(value), 1.0)]
        if isinstance(value, (list, range)) and len(value) > self.count:
            return self._choose_several(value, ordered=True)
        raise NotEnumerable

    @staticmethod
    def _choose_one(population: Any) -> list[tuple[tuple[Any, ...], float]]:
        if len(population) == 0 or len(population) > ENUMERATION_LIMIT:
            raise NotEnumerable
        weight = 1.0 / len(population)
        return _weighted([((item,), weight) for item in population])

    def _choose_several(self, population: Any, ordered: bool) -> list[tuple[tuple[Any, ...], float]]:
        size = len(population)
        if size < self.count:
            raise NotEnumerable
        total = math.perm(size, self.count) if ordered else math.comb(size, self.count)
        if total > PERMUTATION_LIMIT:
            raise NotEnumerable
        pick = itertools.permutations if ordered else itertools.combinations
        weight = 1.0 / total
        return _weighted([(tuple(population[index] for index in indexes), weight)
                          for indexes in pick(range(size), self.count)])


def _reads(node: ast.AST, name: str) -> bool:
    return any(isinstance(child, ast.Name) and child.id == name for child in ast.walk(node))


def _linear(node: ast.expr, name: str, scaled: bool = True) -> bool:
    """Whether `node` is linear in `name`: sums, differences and negations of terms, where the
    term holding `name` may be multiplied by, or divided by, parts that do not read it (unless
    `scaled` is False: then `name` must enter with slope +1 or -1)."""
    if not _reads(node, name) or (isinstance(node, ast.Name) and node.id == name):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return _linear(node.left, name, scaled) and _linear(node.right, name, scaled)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _linear(node.operand, name, scaled)
    if not scaled:
        return False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return (_linear(node.left, name) and not _reads(node.right, name)) or (
            _linear(node.right, name) and not _reads(node.left, name))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _linear(node.left, name) and not _reads(node.right, name)
    return False


def equality_pin(condition: Expression, name: str) -> Expression | None:
    """For a condition `left == right` that is linear in `name`, read once (`total == a + b`,
    `price2 == frac * price1`): the expression `left - right`, whose values at `name` = 0 and 1
    give the one value of `name` that meets the condition."""
    body = condition.tree.body
    if not (isinstance(body, ast.Compare) and len(body.ops) == 1 and isinstance(body.ops[0], ast.Eq)):
        return None
    difference = ast.BinOp(body.left, ast.Sub(), body.comparators[0])
    occurrences = sum(1 for child in ast.walk(difference) if isinstance(child, ast.Name) and child.id == name)
    if occurrences != 1 or not _linear(difference, name):
        return None
    return sub_expression(condition, difference)


def integer_pin(condition: Expression, name: str) -> Expression | None:
    """For `is_int(expression)` with `name` a plain term of it, read once (`is_int(price - cost)`):
    that expression; it is whole only for values of `name` with one fractional part."""
    body = condition.tree.body
    if not (isinstance(body, ast.Call) and isinstance(body.func, ast.Name) and body.func.id == "is_int"
            and len(body.args) == 1):
        return None
    argument = body.args[0]
    occurrences = sum(1 for child in ast.walk(argument) if isinstance(child, ast.Name) and child.id == name)
    if occurrences != 1 or not _linear(argument, name, scaled=False):
        return None
    return sub_expression(condition, argument)


def find_pin(condition: Expression, name: str) -> tuple[str, Expression] | None:
    """How `condition` pins `name`: ("equal", left - right) or ("integral", the is_int argument)."""
    difference = equality_pin(condition, name)
    if difference is not None:
        return "equal", difference
    argument = integer_pin(condition, name)
    return ("integral", argument) if argument is not None else None


def fractional_part(value: Any) -> Any:
    """The key picks are grouped by for an `is_int` pin: the fractional part, rounded past float noise."""
    try:
        return round(float(value) % 1, 9) % 1
    except (TypeError, ValueError):
        return None


def _integral_picks(argument: Expression, name: str, lookup: dict[Any, list], picks: list,
                    environment: dict[str, Any], context: Context) -> list:
    """The picks that can make `is_int(argument)` true: when `name` enters with slope +-1, only
    those with the one fractional part that does; with any other slope, all of them."""
    environment[name] = 0
    at_zero = evaluate(argument, environment, context)
    environment[name] = 1
    slope = evaluate(argument, environment, context) - at_zero
    if slope not in (1, -1):
        return picks
    return lookup.get(fractional_part(-at_zero * slope), [])


def pinned_value(difference: Expression, name: str, environment: dict[str, Any], context: Context) -> Any:
    """The value of `name` at which `difference` (linear in it) is zero; None when there is none."""
    environment[name] = 0
    at_zero = evaluate(difference, environment, context)
    environment[name] = 1
    slope = evaluate(difference, environment, context) - at_zero
    if slope == 0:
        return None
    if isinstance(at_zero, (int, Fraction)) and isinstance(slope, (int, Fraction)):
        value = Fraction(-at_zero) / slope
        return value.numerator if value.denominator == 1 else value
    return round(-at_zero / slope, 10)


def _by_value(picks: list[tuple[tuple[Any, ...], float]], numeric: bool) -> dict[Any, list]:
    """Picks grouped by the value a variable takes from them (a `$` variable takes the number of
    a `(text, number)` pair), for looking up the ones an equality pins."""
    groups: dict[Any, list] = {}
    for item, weight in picks:
        value = item[0]
        if numeric and isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            value = value[1]
        try:
            groups.setdefault(value, []).append((item, weight))
        except TypeError:
            continue  # an unhashable pick (a list) is never pinned
    return groups


def enumerate_solutions(lines: list[LinePopulations], bind: Callable[[int, tuple[Any, ...], dict[str, Any]], None],
                        checks: list[list[Expression]], environment: dict[str, Any], context: Context,
                        variables: frozenset[str], limit: int = ENUMERATION_LIMIT) -> Solutions:
    """Every valid binding of `lines` (bound in order by `bind`; `checks[i]` are the conditions
    that become checkable once line i is bound), weighted by its independent-draw probability,
    listed level by level. When the next level would pass `limit` branches, the valid bindings of
    the levels listed so far are returned (`depth` says how many): picking one of those by weight
    and drawing the remaining lines by rejection is still exact, and far likelier to succeed.

    A line whose domain reads no variable has its picks listed once. A one-name line that a
    condition pins (`total == a + b`) is not walked at all: the pinned value is looked up among
    its picks, which narrows the walk from the whole range to at most one branch.
    """
    static: list[list | None] = []
    pinned: list[tuple | None] = []
    for line, conditions in zip(lines, checks):
        reads_variables = isinstance(line, LinePopulations) and bool(line.assignment.domain.names & variables)
        picks = None if reads_variables else line.picks(environment, context)
        static.append(picks)
        pin = None
        if picks is not None and isinstance(line, LinePopulations) and line.count == 1:
            numeric, name = line.assignment.numeric[0], line.assignment.names[0]
            for condition in conditions:
                found = find_pin(condition, name)
                if found is not None:
                    kind, expression = found
                    groups = _by_value(picks, numeric)
                    if kind == "integral":
                        merged: dict[Any, list] = {}
                        for value, members in groups.items():
                            merged.setdefault(fractional_part(value), []).extend(members)
                        groups = merged
                    pin = (kind, expression, name, groups)
                    break
        pinned.append(pin)
    frontier: list[tuple[tuple[Any, ...], float]] = [((), 1.0)]
    total, walked = 0, 0
    for level, conditions in enumerate(checks):
        total += walked if level else 0
        walked = 0  # `limit` bounds each level's branches, TOTAL_LIMIT the whole walk's
        expanded: list[tuple[tuple[Any, ...], float]] = []
        growth = len(frontier) * len(static[level]) if static[level] is not None and pinned[level] is None else 0
        if growth > limit or total + growth > TOTAL_LIMIT:
            # This level alone would pass the limit: stop before walking any of it.
            if level == 0:
                raise NotEnumerable
            return _solutions(frontier, level)
        previous: tuple[Any, ...] = ()
        for path, weight in frontier:
            # One environment serves every node (a level reads only names above it): rebind the
            # part of the path that differs from the previous node's (siblings share the rest).
            start = 0
            while start < len(previous) and path[start] is previous[start]:
                start += 1
            for above in range(start, len(path)):
                bind(above, path[above], environment)
            previous = path
            picks = static[level]
            if picks is None:
                picks = lines[level].picks(environment, context)
            if pinned[level] is not None:
                kind, expression, name, lookup = pinned[level]
                try:
                    if kind == "equal":
                        picks = lookup.get(pinned_value(expression, name, environment, context), [])
                    else:
                        picks = _integral_picks(expression, name, lookup, picks, environment, context)
                except TypeError:  # an unhashable value: nothing pinned can equal it
                    picks = []
                except TemplateError:
                    picks = []  # e.g. a division by zero on this branch: no value meets it
            # A pinned level costs one lookup per node above, not one branch per value.
            walked += len(picks) if pinned[level] is None else 1
            if walked > limit or total + walked > TOTAL_LIMIT:
                if level == 0:
                    raise NotEnumerable
                return _solutions(frontier, level)  # the levels above, listed; the rest by rejection
            for item, item_weight in picks:
                bind(level, item, environment)
                if _holds(conditions, environment, context):
                    expanded.append((path + (item,), weight * item_weight))
        frontier = expanded
        if not frontier:
            break
    return _solutions(frontier, len(checks))


def _holds(conditions: list[Expression], environment: dict[str, Any], context: Context) -> bool:
    try:
        return all_hold(conditions, environment, context)
    except FatalTemplateError:
        raise
    except TemplateError:  # e.g. a division by zero on this branch only: the branch is not valid
        return False


def _solutions(frontier: list[tuple[tuple[Any, ...], float]], depth: int) -> Solutions:
    cumulative = list(itertools.accumulate(weight for _, weight in frontier))
    return Solutions([path for path, _ in frontier], cumulative, cumulative[-1] if cumulative else 0.0, depth)
