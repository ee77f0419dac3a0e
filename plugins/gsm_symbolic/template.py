"""Reading the official GSM-Symbolic template format.

A template is one JSON object with `question`, `answer`, `id_orig`, `id_shuffled`,
`question_annotated` and `answer_annotated`. `question_annotated` is the question text with
`{name,original}` marking each variable, followed by the sections

    #init:
    - name = sample(names_female)
    - $count = range(2, 20)
    - $a, $b = sample(range(1, 10), 2)
    #conditions:
    - divides(count, 2)
    #answer: count // 2

`answer_annotated` is the worked answer with `{expression}` placeholders, ending `#### {expression}`.
Every expression is parsed and checked here, so an unsafe or unknown one fails at load time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from plugins.gsm_symbolic.errors import Location, TemplateError
from plugins.gsm_symbolic.expressions import Expression, parse_expression
from plugins.gsm_symbolic.vocabularies import VOCABULARIES

REQUIRED_FIELDS = ("question", "answer", "id_orig", "id_shuffled", "question_annotated", "answer_annotated")
# `#answer: expr` is the documented form; some official files write `#answer = expr`.
SECTION_PATTERN = re.compile(r"^\s*#(init|conditions|answer)\s*(?::|=(?!=))\s*(.*)$")
MAX_TEMPLATE_BYTES = 1_000_000  # the official files are under 6 KB
MAX_LINE_LENGTH = 4_000  # the official files' longest line is under 1,000 characters
MAX_SECTION_LINES = 500  # #init and #conditions lines together; the official files stay under 30
ASSIGNMENT_PATTERN = re.compile(r"^\s*-\s*(?P<targets>[$\w\s,]+?)\s*=(?!=)\s*(?P<domain>.+?)\s*$")
CONDITION_PATTERN = re.compile(r"^\s*-\s*(?P<condition>.+?)\s*$")
PLACEHOLDER_PATTERN = re.compile(r"\{([^{}]*)\}")
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FINAL_ANSWER_PATTERN = re.compile(r"^\s*####\s*\{(?P<expression>[^{}]+)\}\s*$")


@dataclass(frozen=True)
class VariableMark:
    """One `{name,original}` (or `{name}`) in the question text; `span` indexes `Template.text`."""

    name: str
    original: str | None
    span: tuple[int, int]
    line: int


@dataclass(frozen=True)
class Assignment:
    """One `#init` line: the names it binds (with their `$` numeric flags) and its domain."""

    names: tuple[str, ...]
    numeric: tuple[bool, ...]
    domain: Expression


@dataclass(frozen=True)
class AnswerPart:
    """`answer_annotated` cut into literal text and `{expression}` placeholders, in order."""

    literal: str
    expression: Expression | None


@dataclass(frozen=True)
class Template:
    path: str
    id_orig: int
    id_shuffled: int
    question: str
    answer: str
    text: str  # question_annotated before `#init:`, marks still in place
    marks: tuple[VariableMark, ...]
    assignments: tuple[Assignment, ...]
    conditions: tuple[Expression, ...]
    gold: Expression
    answer_parts: tuple[AnswerPart, ...]
    final_answer: Expression  # the `#### {expression}` of answer_annotated

    @property
    def numeric_names(self) -> frozenset[str]:
        """The `$` variables: numbers, shown as numbers (or as the text of a `(text, value)` pair)."""
        return frozenset(name for assignment in self.assignments
                         for name, numeric in zip(assignment.names, assignment.numeric) if numeric)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(name for assignment in self.assignments for name in assignment.names)

    def originals(self) -> dict[str, str]:
        """Each marked variable's original text (the first mark that gives one)."""
        found: dict[str, str] = {}
        for mark in self.marks:
            if mark.original is not None:
                found.setdefault(mark.name, mark.original)
        return found


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _parse_marks(text: str, path: str) -> tuple[VariableMark, ...]:
    marks = []
    for match in PLACEHOLDER_PATTERN.finditer(text):
        line = _line_of(text, match.start())
        name, comma, original = match.group(1).partition(",")
        name = name.strip()
        if not IDENTIFIER_PATTERN.match(name):
            raise Location(path, line, "question_annotated").error(f"malformed variable mark {match.group(0)!r}; expected {{name,original}}")
        marks.append(VariableMark(name, original.strip() if comma else None, match.span(), line))
    inside_marks = {index for mark in marks for index in range(*mark.span)}
    for index, character in enumerate(text):
        if character in "{}" and index not in inside_marks:
            raise Location(path, _line_of(text, index), "question_annotated").error(f"unbalanced {character!r} in the question text")
    return tuple(marks)


def _parse_targets(targets: str, location: Location) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    names, numeric = [], []
    for target in targets.split(","):
        target = target.strip()
        is_numeric = target.startswith("$")
        name = target.lstrip("$").strip()
        if not IDENTIFIER_PATTERN.match(name) or name.startswith("_"):
            raise location.error(f"bad variable name {target!r} in #init")
        names.append(name)
        numeric.append(is_numeric)
    return tuple(names), tuple(numeric)


def _split_sections(annotated: str, path: str) -> tuple[str, dict[str, list[tuple[int, str]]]]:
    """The question text, and each section's lines as (line number, text)."""
    lines = annotated.split("\n")
    sections: dict[str, list[tuple[int, str]]] = {}
    current: str | None = None
    text_lines: list[str] = []
    for number, line in enumerate(lines, start=1):
        header = SECTION_PATTERN.match(line)
        if header:
            current = header.group(1)
            if current in sections:
                raise Location(path, number, "question_annotated").error(f"section #{current} appears twice")
            sections[current] = [(number, header.group(2))] if header.group(2).strip() else []
        elif current is None:
            text_lines.append(line)
        elif line.strip():
            sections[current].append((number, line))
    for required in ("init", "answer"):
        if required not in sections:
            raise Location(path, None, "question_annotated").error(f"missing section #{required}:")
    return "\n".join(text_lines).rstrip(), sections


def _check_lines(text: str, path: str, field: str) -> None:
    """Refuse a line too long to be a word problem's before any parsing is spent on it."""
    for number, line in enumerate(text.split("\n"), start=1):
        if len(line) > MAX_LINE_LENGTH:
            raise Location(path, number, field).error(f"line of {len(line):,} characters (limit {MAX_LINE_LENGTH:,})")


def _check_names(expression: Expression, known: set[str], what: str) -> None:
    for name in sorted(expression.names - known):
        raise expression.location.error(f"unknown {what} {name!r} in {expression.text!r}")


def _parse_answer(answer_annotated: str, path: str) -> tuple[tuple[AnswerPart, ...], Expression]:
    lines = answer_annotated.rstrip().split("\n")
    final = FINAL_ANSWER_PATTERN.match(lines[-1])
    if not final:
        raise Location(path, len(lines), "answer_annotated").error("the last line must be '#### {expression}'")
    final_expression = parse_expression(final.group("expression"), Location(path, len(lines), "answer_annotated"))
    parts: list[AnswerPart] = []
    position = 0
    for match in PLACEHOLDER_PATTERN.finditer(answer_annotated):
        location = Location(path, _line_of(answer_annotated, match.start()), "answer_annotated")
        parts.append(AnswerPart(answer_annotated[position:match.start()], parse_expression(match.group(1), location)))
        position = match.end()
    parts.append(AnswerPart(answer_annotated[position:], None))
    for part in parts:
        if "{" in part.literal or "}" in part.literal:
            raise Location(path, None, "answer_annotated").error("unbalanced '{' or '}'")
    return tuple(parts), final_expression


def parse_template(data: object, path: str) -> Template:
    """Check and parse one template object; `path` names it in every error."""
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: a template must be a JSON object, got {type(data).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise TemplateError(f"{path}: missing field(s) {', '.join(missing)}")
    for name in ("question", "answer", "question_annotated", "answer_annotated"):
        if not isinstance(data[name], str):
            raise TemplateError(f"{path}: field {name!r} must be a string")
    for name in ("question_annotated", "answer_annotated"):
        _check_lines(data[name], path, name)
    text, sections = _split_sections(data["question_annotated"], path)
    section_lines = len(sections.get("init", [])) + len(sections.get("conditions", []))
    if section_lines > MAX_SECTION_LINES:
        raise Location(path, None, "question_annotated").error(
            f"{section_lines} #init and #conditions lines (limit {MAX_SECTION_LINES})")
    marks = _parse_marks(text, path)

    assignments: list[Assignment] = []
    declared: set[str] = set()
    vocabulary = set(VOCABULARIES)
    for number, line in sections["init"]:
        location = Location(path, number, "question_annotated")
        match = ASSIGNMENT_PATTERN.match(line)
        if not match:
            raise location.error(f"malformed #init line {line.strip()!r}; expected '- name = domain'")
        names, numeric = _parse_targets(match.group("targets"), location)
        domain = parse_expression(match.group("domain"), location)
        # Domains may read vocabularies and variables assigned on earlier lines only.
        _check_names(domain, vocabulary | declared, "vocabulary")
        duplicated = declared.intersection(names)
        if duplicated:
            # A later line replaces an earlier one (as running the lines in order would), provided
            # the earlier line binds nothing else and nothing read it in between.
            earlier = [index for index, previous in enumerate(assignments) if set(previous.names) & duplicated]
            readers = [later for later in assignments[earlier[0] + 1:] if later.domain.names & duplicated]
            if len(earlier) != 1 or set(assignments[earlier[0]].names) != duplicated or readers or domain.names & duplicated:
                raise location.error(f"variable {min(duplicated)!r} is assigned twice")
            del assignments[earlier[0]]
            declared -= duplicated
        declared.update(names)
        assignments.append(Assignment(names, numeric, domain))

    known = declared | vocabulary
    conditions = []
    for number, line in sections.get("conditions", []):
        location = Location(path, number, "question_annotated")
        match = CONDITION_PATTERN.match(line)
        if not match:
            raise location.error(f"malformed #conditions line {line.strip()!r}; expected '- expression'")
        condition = parse_expression(match.group("condition"), location)
        _check_names(condition, known, "variable")
        conditions.append(condition)

    answer_lines = sections["answer"]
    if len(answer_lines) != 1:
        raise Location(path, answer_lines[0][0] if answer_lines else None, "question_annotated").error(
            "#answer must hold exactly one expression")
    gold_text = answer_lines[0][1].strip()
    if gold_text.startswith("{") and gold_text.endswith("}"):
        gold_text = gold_text[1:-1]  # `#answer: {expression}`, as some official files write it
    gold = parse_expression(gold_text, Location(path, answer_lines[0][0], "question_annotated"))
    _check_names(gold, known, "variable")

    for mark in marks:
        if mark.name not in declared:
            raise Location(path, mark.line, "question_annotated").error(f"variable {mark.name!r} is marked in the text but not assigned in #init")
    answer_parts, final_answer = _parse_answer(data["answer_annotated"], path)
    for part in answer_parts:
        if part.expression is not None:
            _check_names(part.expression, known, "variable")

    try:
        id_orig, id_shuffled = int(data["id_orig"]), int(data["id_shuffled"])
    except (TypeError, ValueError):
        raise TemplateError(f"{path}: id_orig and id_shuffled must be integers") from None
    return Template(path, id_orig, id_shuffled, data["question"], data["answer"], text, marks,
                    tuple(assignments), tuple(conditions), gold, answer_parts, final_answer)


def load_template(path: str | Path) -> Template:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{path}: template file of {path.stat().st_size:,} bytes (limit {MAX_TEMPLATE_BYTES:,})")
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TemplateError(f"{path}: line {error.lineno}: malformed JSON: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TemplateError(f"{path}: cannot read template: {error}") from None
    return parse_template(data, str(path))


def builtin_templates_dir() -> Path:
    """The templates of this project's own writing, shipped as package data."""
    return Path(__file__).parent / "templates"


# Variants that rewrite symbolic instances read the symbolic templates; p1/p2 have their own files.
TEMPLATE_FOLDERS = {"names": "symbolic", "numbers": "symbolic", "noop": "symbolic"}


def template_paths(directory: str | Path | None = None, variant: str = "symbolic") -> list[Path]:
    """The `DIR/<folder>/*.json` files (the official layout), sorted by file name; the folder is
    the variant's name, except that names/numbers/noop read `DIR/symbolic/`."""
    root = Path(directory) if directory is not None else builtin_templates_dir()
    folder = root / TEMPLATE_FOLDERS.get(variant, variant)
    if not folder.is_dir():
        raise TemplateError(f"{folder}: no such template folder (expected DIR/{variant}/NNNN.json)")
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise TemplateError(f"{folder}: holds no *.json templates")
    return paths


def load_templates(directory: str | Path | None = None, variant: str = "symbolic") -> list[Template]:
    """Every template of `template_paths`, loaded (the first bad one raises)."""
    return [load_template(path) for path in template_paths(directory, variant)]
