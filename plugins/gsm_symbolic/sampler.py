"""Drawing instances from a template: sample `#init` until `#conditions` hold, render, check.

Only the `#init` lines the conditions read (directly, or through the domains of lines they read)
take part in the search; each condition is checked as soon as the lines it reads are bound, so a
failing draw stops early; the other lines are drawn once the search has succeeded. A short probe
per template measures how often independent draws meet the conditions: when that is rare, the
valid draws are listed exactly (`enumeration`) and picked from by their probability, which gives
the distribution rejection sampling would give, without its misses.

Each instance has its own `random.Random` seeded from (seed, template id, instance number), so an
instance does not depend on how many others were drawn. `original=True` puts every marked variable
at its annotated original value, which reproduces the original question. Every instance is
checked: its conditions hold and the `####` line of its rendered answer equals `#answer`; a draw
that fails the check is drawn again, and a template whose draws all fail it is refused.
"""

from __future__ import annotations

import ast
import math
import random
from dataclasses import dataclass
from typing import Any

from plugins.gsm_symbolic.binding import bind, numeric_value, store
from plugins.gsm_symbolic.enumeration import HeldLine, LinePopulations, NotEnumerable, enumerate_solutions
from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.expressions import Budget, Context, FatalTemplateError, all_hold, evaluate, sub_expression
from plugins.gsm_symbolic.planning import Component, agreement_condition, plan_components
from plugins.gsm_symbolic.noop import clause_fit, insert_before_question, noop_clause
from plugins.gsm_symbolic.originals import VARIANTS, check_variant, held_variables, original_bindings, parse_final_answer
from plugins.gsm_symbolic.rendering import format_value, json_value, render_answer, render_question
from plugins.gsm_symbolic.template import Template
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

__all__ = ["DEFAULT_MAX_TRIES", "VARIANTS", "Instance", "SamplerStats", "TemplateSampler", "draw_instance",
           "format_value", "generate", "generate_rows", "held_variables", "instance_rng", "json_value"]

DEFAULT_MAX_TRIES = 10_000
PROBE_TRIES = 300  # independent draws that measure a template's acceptance rate
PROBE_SUCCESSES = 12  # this many valid probe draws (one in 25 or better): rejection sampling is cheap
AGREEMENT_PROBES = 5  # complete draws checked for `####` == `#answer` before the instances
INCONSISTENT_LIMIT = 200  # valid draws whose `####` disagrees, none agreeing, before a template is refused
BASE_BUDGET = 6_000_000  # evaluation steps per template (about a second of work), plus the per-instance share below
INSTANCE_BUDGET = 50_000


@dataclass(frozen=True)
class Instance:
    values: dict[str, Any]
    displays: dict[str, str]
    question: str
    answer: str
    gold: Any


@dataclass
class SamplerStats:
    """How a template was sampled: `method` rejection or enumeration; `acceptance` the share of
    independent draws that meet its conditions (measured, or exact when enumerated)."""

    method: str = "rejection"
    acceptance: float | None = None
    draws: int = 0  # independent draws made (probe included)
    valid: int = 0  # of which met every condition
    solutions: int | None = None  # valid draws listed, when enumerated
    steps: int = 0  # evaluation budget spent
    inconsistent: int = 0  # valid draws whose rendered `####` disagreed with `#answer`
    noop_fit: float | None = None  # noop variant: mean share of the clause bank that fits an instance


def _is_sized_randint(body: ast.expr) -> bool:
    return (isinstance(body, ast.Call) and ast.unparse(body.func) == "np.random.randint" and len(body.args) == 3
            and not any(isinstance(node, ast.Call) for argument in body.args for node in ast.walk(argument)))


class TemplateSampler:
    """Draws checked instances of one template for one variant, within one evaluation budget."""

    def __init__(self, template: Template, variant: str = "symbolic", max_tries: int = DEFAULT_MAX_TRIES,
                 instances: int = 50) -> None:
        check_variant(variant)
        self.template = template
        self.max_tries = max_tries
        self.keep = held_variables(template, variant)
        self.budget = Budget(BASE_BUDGET + INSTANCE_BUDGET * instances)
        self.stats = SamplerStats()
        self.variables = frozenset(template.variables)
        self.randint_bounds = {index: sub_expression(line.domain, ast.Tuple(line.domain.tree.body.args[:2], ast.Load()))
                               for index, line in enumerate(template.assignments)
                               if len(line.names) == 1 and _is_sized_randint(line.domain.tree.body)}
        self.base: dict[str, Any] = dict(VOCABULARIES)
        self.static_populations = {index: population for index in range(len(template.assignments))
                                   if (population := self._static_population(index)) is not None}
        self.held: dict[int, tuple[dict[str, Any], dict[str, str]]] = {}
        self.probed = False
        self.agreement_required = False
        self.consistent = 0  # instances whose `####` agreed with `#answer`
        self.last_error: TemplateError | None = None
        plan = plan_components(template, sizes=self._line_sizes(), held=self.keep)
        self.components, self.rest, self.constant_checks = plan.components, plan.rest, plan.constant_checks
        if self.keep:
            values, displays, _ = original_bindings(template, self.base, Context(random.Random(0), self.budget),
                                                    strict=True, only=self.keep)
            for index, line in enumerate(template.assignments):
                if any(name in self.keep for name in line.names):
                    self.held[index] = ({name: values[name] for name in line.names},
                                        {name: displays[name] for name in line.names if name in displays})

    def _line_sizes(self) -> dict[int, int]:
        return {index: len(population) for index, population in self.static_populations.items()}

    def _static_population(self, index: int) -> Any:
        """What a one-name line picks from, when its domain reads no variable (else None)."""
        line = self.template.assignments[index]
        if len(line.names) != 1 or line.domain.names & self.variables:
            return None
        try:
            populations = LinePopulations(line)
        except NotEnumerable:
            return None
        context = Context(random.Random(0), self.budget)
        try:
            if populations.kind == "value":
                value = evaluate(line.domain, self.base, context)
            elif populations.kind == "sample" and populations.size is None and populations.population is not None:
                value = evaluate(populations.population, self.base, context)
            else:
                return None
        except FatalTemplateError:
            raise
        except TemplateError:
            return None  # let the draws report it, where it is
        return value if isinstance(value, (list, range, tuple)) and len(value) > 0 else None

    # ---- one draw ----

    def _bind_line(self, index: int, environment: dict[str, Any], displays: dict[str, str], context: Context) -> None:
        if index in self.held:
            values, shown = self.held[index]
            environment.update(values)
            displays.update(shown)
            return
        assignment = self.template.assignments[index]
        population = self.static_populations.get(index)
        if population is not None:
            # The domain reads no variable: its population was built once; one pick from it is the
            # same draw as evaluating the domain again (a shuffle included).
            context.budget.charge(1)
            store(assignment.names[0], assignment.numeric[0], context.rng.choice(population), environment, displays)
            return
        bounds = self.randint_bounds.get(index)
        if bounds is not None:
            # `x = np.random.randint(low, high, size)` picks one of `size` uniform draws: one draw.
            low, high = evaluate(bounds, environment, context)
            store(assignment.names[0], assignment.numeric[0], context.rng.randrange(low, high), environment, displays)
            return
        bind(assignment, evaluate(assignment.domain, environment, context), environment, displays, context.rng)

    def _conditions_hold(self, conditions: list, environment: dict[str, Any], context: Context) -> bool:
        try:
            return all_hold(conditions, environment, context)
        except FatalTemplateError:
            raise
        except TemplateError as error:  # e.g. a division by zero for this draw only: reject the draw
            self.last_error = error
            return False

    def _draw_component(self, component: Component, environment: dict[str, Any], displays: dict[str, str],
                        context: Context, start: int = 0) -> bool:
        """Bind one component's lines from `start` on, in its order, stopping at the first failed condition."""
        component.draws += 1
        for index, checks in zip(component.lines[start:], component.checks[start:]):
            self._bind_line(index, environment, displays, context)
            if not self._conditions_hold(checks, environment, context):
                return False
        component.valid += 1
        return True

    def _bind_component(self, component: Component, environment: dict[str, Any], displays: dict[str, str],
                        context: Context) -> None:
        """A valid binding of one component: its listed lines picked by weight from their valid
        bindings (all of them, or a prefix), the rest drawn by rejection."""
        solutions = component.solutions
        for _ in range(self.max_tries):
            start = 0
            if solutions is not None:
                for index, items in zip(component.lines, solutions.pick(context.rng)):
                    line = self.template.assignments[index]
                    for name, numeric, item in zip(line.names, line.numeric, items):
                        store(name, numeric, item, environment, displays)
                start = solutions.depth
                if start == len(component.lines):
                    return
            if self._draw_component(component, environment, displays, context, start):
                return
        raise self._unmet(f"no draw in {self.max_tries} tries did satisfy #conditions")

    # ---- choosing the method ----

    def _probe(self) -> None:
        """Measure each component's acceptance rate; list its valid draws when that is too low."""
        self.probed = True
        constant_context = Context(random.Random(0), self.budget)
        for condition in self.constant_checks:  # errors here are the template's, not a draw's
            if not evaluate(condition, dict(self.base), constant_context):
                raise TemplateError(f"{self.template.path}: conditions cannot be met ({condition.text!r} never holds)")
        for number, component in enumerate(self.components):
            self._probe_component(component, Context(random.Random(
                f"gsm-symbolic-probe:{self.template.id_shuffled}:{number}"), self.budget))
        if not self.agreement_required and not self._some_draws_agree():
            # Every probe draw's `####` disagrees with `#answer`: search for the draws where they
            # agree instead (found by listing when there are any; refused when there are none).
            self.agreement_required = True
            plan = plan_components(self.template, (agreement_condition(self.template),), self._line_sizes(), self.keep)
            self.components, self.rest, self.constant_checks = plan.components, plan.rest, plan.constant_checks
            self._probe()
            return
        listed = [component for component in self.components if component.solutions is not None]
        if listed:
            complete = all(component.solutions.depth == len(component.lines) for component in listed)
            self.stats.method = "enumeration" if complete else "enumeration+rejection"
            self.stats.solutions = sum(len(component.solutions.bindings) for component in self.components
                                       if component.solutions is not None)

    def _some_draws_agree(self) -> bool:
        """Whether any of a few complete probe draws renders a `####` equal to `#answer`."""
        context = Context(random.Random(f"gsm-symbolic-agreement:{self.template.id_shuffled}"), self.budget)
        for _ in range(AGREEMENT_PROBES):
            environment, displays = dict(self.base), {}
            try:
                for component in self.components:
                    self._bind_component(component, environment, displays, context)
            except FatalTemplateError:
                raise
            except TemplateError:
                return True  # conditions too rare to tell here: leave it to the draws themselves
            for index in self.rest:
                self._bind_line(index, environment, displays, context)
            inconsistent = self.stats.inconsistent
            agrees = self._finish(environment, displays, context) is not None
            self.stats.inconsistent = inconsistent  # probe draws are not counted
            if agrees:
                return True
        return False

    def _probe_component(self, component: Component, context: Context) -> None:
        environment, displays = dict(self.base), {}
        for _ in range(PROBE_TRIES):
            if self._draw_component(component, environment, displays, context) and component.valid >= PROBE_SUCCESSES:
                break
        if component.valid >= PROBE_SUCCESSES:
            return
        try:
            lines = [HeldLine(self.held[index]) if index in self.held else LinePopulations(self.template.assignments[index])
                     for index in component.lines]

            targets = [tuple(zip(self.template.assignments[index].names, self.template.assignments[index].numeric))
                       for index in component.lines]

            def bind(place: int, item: tuple[Any, ...], scope: dict[str, Any]) -> None:
                for (name, numeric), value in zip(targets[place], item):
                    if type(value) is tuple:
                        store(name, numeric, value, scope, {})
                    else:
                        scope[name] = value
            solutions = enumerate_solutions(lines, bind, component.checks, dict(self.base), context, self.variables)
        except NotEnumerable:
            return  # stay with rejection sampling; the budget bounds how long it may try
        except FatalTemplateError:
            raise
        except TemplateError as error:
            self.last_error = error
            return
        if not solutions.bindings:
            if self.agreement_required:
                raise TemplateError(f"{self.template.path}: #answer contradicts the worked answer's '####' line "
                                    f"for every possible draw (all were listed; the file is inconsistent)")
            raise self._unmet("no possible draw satisfies #conditions (all were listed)")
        component.solutions = solutions
        component.draws = component.valid = 0  # from now on: draws of the lines not listed

    def finish_stats(self) -> SamplerStats:
        """The statistics so far: acceptance is the product over components of the probability
        that an independent draw meets their conditions (exact for listed lines, measured otherwise)."""
        acceptance = 1.0
        for component in self.components:
            listed = component.solutions.acceptance if component.solutions is not None else 1.0
            measured = component.valid / component.draws if component.draws else 1.0
            acceptance *= listed * measured
        self.stats.acceptance = acceptance
        self.stats.draws = sum(component.draws for component in self.components)
        self.stats.valid = sum(component.valid for component in self.components)
        self.stats.steps = self.budget.spent
        return self.stats

    def _unmet(self, what: str) -> TemplateError:
        detail = f"; last error: {self.last_error}" if self.last_error else ""
        if self.agreement_required:
            what += ", counting only draws whose '####' agrees with #answer: none of the probe draws did, so the file is likely inconsistent"
        return TemplateError(f"{self.template.path}: conditions cannot be met ({what}){detail}")

    # ---- instances ----

    def draw(self, rng: random.Random) -> Instance:
        """One checked instance drawn with `rng`."""
        if not self.probed:
            self._probe()
        context = Context(rng, self.budget)
        tried_valid = 0
        for _ in range(self.max_tries):
            environment, displays = dict(self.base), {}
            for component in self.components:
                self._bind_component(component, environment, displays, context)
            tried_valid += 1
            for index in self.rest:
                self._bind_line(index, environment, displays, context)
            instance = self._finish(environment, displays, context)
            if instance is not None:
                self.consistent += 1
                return instance
            if not self.consistent and self.stats.inconsistent >= INCONSISTENT_LIMIT:
                break  # no draw so far has agreed: the file contradicts itself, no need for more
        if tried_valid:
            raise TemplateError(f"{self.template.path}: the worked answer's '####' line disagrees with #answer "
                                f"for every one of {self.stats.inconsistent} valid draws (the file is inconsistent)"
                                + (f"; last: {self.last_error}" if self.last_error else ""))
        raise self._unmet(f"no draw in {self.max_tries} tries did satisfy #conditions")

    def _finish(self, environment: dict[str, Any], displays: dict[str, str], context: Context) -> Instance | None:
        template = self.template
        try:
            gold = evaluate(template.gold, environment, context)
            final = evaluate(template.final_answer, environment, context)
            texts = [format_value(evaluate(part.expression, environment, context))
                     for part in template.answer_parts if part.expression is not None]
        except FatalTemplateError:
            raise
        except TemplateError as error:
            self.last_error = error
            self.stats.inconsistent += 1
            return None
        gold_number, final_number = numeric_value(gold), numeric_value(final)
        if gold_number is None or final_number is None or not math.isclose(gold_number, final_number, rel_tol=1e-9, abs_tol=1e-9):
            self.last_error = TemplateError(f"#### {format_value(final)} but #answer {format_value(gold)}")
            self.stats.inconsistent += 1
            return None
        values = {name: environment[name] for name in template.variables}
        question = render_question(template, values, displays, keep=self.keep)
        return Instance(values, dict(displays), question, render_answer(template, texts), gold)

    def draw_original(self, rng: random.Random) -> Instance:
        """Every marked variable at its original; the answer rendered when the originals make a
        consistent one, else the original answer as written (conditions are not required)."""
        template = self.template
        context = Context(rng, self.budget)
        values, displays, complete = original_bindings(template, self.base, context, strict=False)
        environment = dict(self.base) | values
        instance = self._finish(environment, displays, context) if complete else None
        question = render_question(template, {name: environment.get(name) for name in template.variables},
                                   displays, original=True)
        if instance is not None:
            return Instance(instance.values, instance.displays, question, instance.answer, instance.gold)
        return Instance({name: environment.get(name) for name in template.variables}, displays, question,
                        template.answer.strip(), parse_final_answer(template))


def instance_rng(seed: int, template: Template, instance: int) -> random.Random:
    # A string seed is hashed by `random` itself (sha512), stable across runs and platforms.
    return random.Random(f"gsm-symbolic:{seed}:{template.id_shuffled}:{instance}")


def draw_instance(template: Template, rng: random.Random, original: bool = False,
                  max_tries: int = DEFAULT_MAX_TRIES, variant: str = "symbolic") -> Instance:
    """One instance (see `TemplateSampler`); the inserted clause of "noop" is added by `generate`."""
    sampler = TemplateSampler(template, variant, max_tries, instances=1)
    return sampler.draw_original(rng) if original else sampler.draw(rng)


def generate(template: Template, instances: int, seed: int, original: bool = False, variant: str = "symbolic",
             max_tries: int = DEFAULT_MAX_TRIES) -> tuple[list[dict[str, Any]], SamplerStats]:
    """Rows in the official generated-data format plus `variant` and `values`, and how they were drawn.

    `variant` picks what is re-sampled (see `held_variables`); "noop" rows hold the symbolic
    instance with one inconsequential clause inserted before the question sentence (also given
    as `noop_clause`), drawn from its own random stream so the instance itself is unchanged.
    """
    sampler = TemplateSampler(template, variant, max_tries, instances)
    rows = []
    fits: list[float] = []
    for number in range(instances):
        rng = instance_rng(seed, template, number)
        drawn = sampler.draw_original(rng) if original else sampler.draw(rng)
        question, extra = drawn.question, {}
        if variant == "noop":
            noop_rng = random.Random(f"gsm-symbolic-noop:{seed}:{template.id_shuffled}:{number}")
            clause = noop_clause(drawn.values, noop_rng)
            fits.append(clause_fit(drawn.values))
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
    stats = sampler.finish_stats()
    if fits:
        stats.noop_fit = sum(fits) / len(fits)
    return rows, stats


def generate_rows(template: Template, instances: int, seed: int, original: bool = False,
                  variant: str = "symbolic", max_tries: int = DEFAULT_MAX_TRIES) -> list[dict[str, Any]]:
    """The rows of `generate`, without the sampling statistics."""
    return generate(template, instances, seed, original, variant, max_tries)[0]
