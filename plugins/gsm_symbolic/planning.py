"""Planning a template's draws: which `#init` lines the conditions constrain, in which groups, in
which order.

Lines the conditions never read (names, items, free numbers) are drawn after the search, once.
The constrained lines split into independent components: two lines are in one component when a
condition reads both, or when one's domain reads the other. Components are drawn independently,
which is exact (the conditions factor over them) and turns one search over the product of all
ranges into several small ones. Within a component, lines are ordered so that every condition is
checked as early as its lines allow, so a failing draw stops after few lines.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

from plugins.gsm_symbolic.enumeration import Solutions, find_pin
from plugins.gsm_symbolic.expressions import Expression, sub_expression
from plugins.gsm_symbolic.template import Template


@dataclass
class Component:
    """Lines drawn together (in binding order) and the conditions checked after each one."""

    lines: list[int]
    checks: list[list[Expression]]
    solutions: Solutions | None = None  # set when the valid draws were listed
    draws: int = 0
    valid: int = 0


@dataclass
class Plan:
    components: list[Component]
    rest: list[int]  # lines no condition constrains, in file order
    constant_checks: list[Expression] = field(default_factory=list)  # conditions that read no variable


def _order(lines: list[int], dependencies: dict[int, set[int]], condition_lines: list[set[int]],
           pinned: list[int | None]) -> list[int]:
    """Greedy order. First a line an equality pins right now (its other lines are bound: the
    equality gives its value, nothing is walked); a line kept for pinning (`pinned[i]`, the
    largest of the equality's linear terms) waits until then. Then the available line that
    completes the most conditions, else the one closest to completing some; ties keep file order."""
    remaining, bound, order = set(lines), set(), []
    while remaining:
        available = [line for line in sorted(remaining) if dependencies[line] <= bound] or sorted(remaining)[:1]

        def score(line: int) -> tuple[int, int, int, int, int]:
            after = bound | {line}
            kept = [needed for needed, target in zip(condition_lines, pinned) if target == line]
            pinned_now = any(needed - {line} <= bound for needed in kept)
            waits = bool(kept) and not pinned_now
            completed = sum(1 for needed in condition_lines if line in needed and needed <= after)
            closest = min((len(needed - after) for needed in condition_lines if line in needed), default=99)
            return int(pinned_now), -int(waits), completed, -closest, -line
        best = max(available, key=score)
        order.append(best)
        bound.add(best)
        remaining.discard(best)
    return order


def agreement_condition(template: Template) -> Expression:
    """`#answer` equals the worked answer's `####` expression, as a condition of its own: added to a
    template whose draws mostly disagree, so the search looks for the draws where they agree."""
    gold, final = template.gold, template.final_answer

    def agree(environment, context) -> bool:
        gold_value, final_value = gold.function(environment, context), final.function(environment, context)
        try:
            return math.isclose(float(gold_value), float(final_value), rel_tol=1e-9, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    tree = ast.Expression(ast.Compare(gold.tree.body, [ast.Eq()], [final.tree.body]))
    return Expression(f"#answer == #### ({gold.text} == {final.text})", tree, gold.location,
                      gold.names | final.names, agree, gold.steps + final.steps)


def split_condition(condition: Expression) -> list[Expression]:
    """`a < b < c` as `a < b` and `b < c`, `p and q` as `p` and `q`: each part is checked as soon
    as its own lines are bound, long before the whole chain's are (same truth, the parts are pure)."""
    body = condition.tree.body
    if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And):
        return [part for value in body.values for part in split_condition(sub_expression(condition, value))]
    if isinstance(body, ast.Compare) and len(body.ops) > 1:
        operands = [body.left, *body.comparators]
        return [sub_expression(condition, ast.Compare(operands[index], [operation], [operands[index + 1]]))
                for index, operation in enumerate(body.ops)]
    return [condition]


def plan_components(template: Template, extra: tuple[Expression, ...] = (), sizes: dict[int, int] | None = None,
                    held: frozenset[str] = frozenset()) -> Plan:
    """`sizes`: how many values each line picks from, where known (an equality pins its largest
    term). `held`: variables a variant keeps at their originals; a condition on those alone is
    left out (the original question met it, whatever the template's ranges say)."""
    lines = template.assignments
    conditions = [part for condition in list(template.conditions) + list(extra) for part in split_condition(condition)
                  if not (held and condition.names and condition.names <= held)]
    line_of = {name: index for index, line in enumerate(lines) for name in line.names}
    condition_lines = [{line_of[name] for name in condition.names if name in line_of} for condition in conditions]
    needed = set().union(*(condition.names for condition in conditions)) if conditions else set()
    relevant: set[int] = set()
    for index in reversed(range(len(lines))):
        if any(name in needed for name in lines[index].names):
            relevant.add(index)
            needed |= lines[index].domain.names
    # The lines each equality could pin: those whose one name is a plain term of its sum.
    sizes = sizes or {}
    pinnable = [sorted(line_of[name] for name in condition.names if name in line_of and find_pin(condition, name))
                for condition in conditions]
    pinned = [max(terms, key=lambda line: (sizes.get(line, 1_000), -line)) if terms else None for terms in pinnable]
    dependencies = {index: {line_of[name] for name in lines[index].domain.names if name in line_of} for index in relevant}
    # Union-find over the constrained lines.
    parent = {index: index for index in relevant}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index
    for group in condition_lines + [dependencies[index] | {index} for index in relevant]:
        members = sorted(group & relevant)
        for other in members[1:]:
            parent[root(other)] = root(members[0])
    groups: dict[int, list[int]] = {}
    for index in sorted(relevant):
        groups.setdefault(root(index), []).append(index)
    components = []
    for members in groups.values():
        local = [index for index, needed_lines in enumerate(condition_lines) if needed_lines & set(members)]
        order = _order(members, dependencies, [condition_lines[index] for index in local], [pinned[index] for index in local])
        position = {index: place for place, index in enumerate(order)}
        checks: list[list[Expression]] = [[] for _ in order]
        for condition, needed_lines in zip(conditions, condition_lines):
            if needed_lines and needed_lines <= set(members):
                checks[max(position[index] for index in needed_lines)].append(condition)
        components.append(Component(order, checks))
    constant = [condition for condition, needed_lines in zip(conditions, condition_lines) if not needed_lines]
    rest = [index for index in range(len(lines)) if index not in relevant]
    return Plan(components, rest, constant)
