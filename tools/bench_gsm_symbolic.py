"""Benchmark: every template of a GSM-Symbolic release (Apple's official files, from the user's own
copy) generated with default settings, timed, with each template's sampling method and acceptance.

    python tools/bench_gsm_symbolic.py ~/ml-gsm-symbolic/templates [--instances 50] [--seed 0]

Reads DIR/symbolic, DIR/p1 and DIR/p2 (each template with its own variant), in-process, exactly as
`toolkit-gsm-symbolic generate` does. Prints one line per template that was refused or is not sampled
by plain rejection, then the totals: templates written, instances, seconds, and the lowest
acceptance rates. `--original` also checks that `--original` reproduces each template's original
question text; `--compare DIR/generated_data/GSM_p2.jsonl` checks our vocabularies against the
texts Apple's generated questions show (matched against each template's question text).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.sampler import TemplateSampler, generate
from plugins.gsm_symbolic.template import load_template, template_paths
from plugins.gsm_symbolic.vocabularies import VOCABULARIES


def _question_pattern(text: str) -> tuple[re.Pattern, list[str]]:
    """The template's question text as a regular expression with one group per variable."""
    pieces, names, position = [], [], 0
    for match in re.finditer(r"\{([^{}]*)\}", text):
        pieces.append(re.escape(text[position:match.start()]).replace("\\ ", " +"))
        name = match.group(1).split(",")[0].strip()
        pieces.append(f"(?P={name})" if name in names else f"(?P<{name}>.+?)")
        names.append(name) if name not in names else None
        position = match.end()
    pieces.append(re.escape(text[position:]).replace("\\ ", " +"))
    return re.compile("^" + "".join(pieces).strip() + "$", re.S | re.I), names


def compare_vocabularies(templates: Path, generated: Path) -> None:
    """How many of the vocabulary texts in Apple's generated questions our vocabularies hold."""
    variant = {"GSM_symbolic": "symbolic", "GSM_p1": "p1", "GSM_p2": "p2"}[generated.stem]
    by_id: dict[int, list[str]] = {}
    for line in generated.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_id.setdefault(row["id"], []).append(row["question"])
    seen: dict[str, set[str]] = {}
    matched = total = 0
    for path in template_paths(templates, variant):
        template = load_template(path)
        pattern, _ = _question_pattern(template.text)
        sources = {name: "+".join(vocabulary for vocabulary in VOCABULARIES if re.search(rf"\b{vocabulary}\b", line.domain.text))
                   for line in template.assignments for name in line.names}
        sources = {name: vocabularies for name, vocabularies in sources.items() if vocabularies}
        for question in by_id.get(template.id_shuffled, []):
            total += 1
            found = pattern.match(question.strip())
            if found is None:
                continue
            matched += 1
            for name, vocabulary in sources.items():
                if name in pattern.groupindex:
                    seen.setdefault(vocabulary, set()).add(found.group(name).lower())
    print(f"{generated.name}: {matched}/{total} questions match their template's text")
    for vocabulary, texts in sorted(seen.items()):
        ours = {(item[0] if isinstance(item, tuple) else str(item)).lower()
                for name in vocabulary.split("+") for item in VOCABULARIES[name]}
        missing = sorted(texts - ours)
        print(f"  {vocabulary}: {len(texts) - len(missing)}/{len(texts)} of Apple's texts are in ours"
              + (f"; not in ours: {', '.join(missing[:8])}" if missing else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", type=Path, help="folder holding symbolic/, p1/ and p2/")
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--original", action="store_true", help="also compare --original with each question")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="Apple's generated GSM_*.jsonl: check our vocabularies against its questions")
    parser.add_argument("--noop", action="store_true", help="also run the noop variant on symbolic/ and report the clause fit")
    arguments = parser.parse_args(argv)
    for generated in arguments.compare:
        compare_vocabularies(arguments.templates, generated)
    written = rows = 0
    refused: list[str] = []
    acceptance: list[tuple[float, str, str]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for variant in ("symbolic", "p1", "p2"):
        for path in template_paths(arguments.templates, variant):
            name = f"{variant}/{path.name}"
            try:
                template_rows, stats = generate(load_template(path), arguments.instances, arguments.seed, variant=variant)
            except TemplateError as error:
                refused.append(f"refused {name}: {error.one_line()}")
                print(refused[-1])
                continue
            written += 1
            rows += len(template_rows)
            acceptance.append((stats.acceptance or 0.0, name, stats.method))
            if stats.method != "rejection":
                print(f"{name}: {stats.method}, acceptance {stats.acceptance:.2e}, solutions listed {stats.solutions}, "
                      f"steps {stats.steps:,}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    total = written + len(refused)
    # CPU seconds beside wall seconds: on a shared machine the wall clock also counts other work.
    print(f"{written}/{total} templates, {rows:,} instances in {seconds:.1f} s ({cpu_seconds:.1f} s of CPU)")
    rates = sorted(acceptance)
    if rates:
        print(f"acceptance: median {statistics.median(rate for rate, _, _ in rates):.3f}; lowest "
              + ", ".join(f"{name} {rate:.1e} ({method})" for rate, name, method in rates[:5]))
        print("templates by method: " + ", ".join(
            f"{method} {sum(1 for _, _, used in rates if used == method)}" for method in sorted({m for _, _, m in rates})))
    if arguments.noop:
        fits, answers_kept, noop_rows = [], 0, 0
        for path in template_paths(arguments.templates, "symbolic"):
            try:
                template = load_template(path)
                plain = generate(template, arguments.instances, arguments.seed, variant="symbolic")[0]
                noop, stats = generate(template, arguments.instances, arguments.seed, variant="noop")
            except TemplateError:
                continue
            fits.append(stats.noop_fit or 0.0)
            answers_kept += sum(before["answer"] == after["answer"] for before, after in zip(plain, noop))
            noop_rows += len(noop)
        print(f"noop: {len(fits)} symbolic templates, {noop_rows:,} instances, answers unchanged {answers_kept:,}; "
              f"mean share of the clause bank that fits an instance {statistics.fmean(fits):.3f} "
              f"(lowest {min(fits):.3f}, templates where every clause fits {sum(fit == 1.0 for fit in fits)})")
    if arguments.original:
        mismatched = 0
        for variant in ("symbolic", "p1", "p2"):
            for path in template_paths(arguments.templates, variant):
                try:
                    template = load_template(path)
                    question = TemplateSampler(template, variant).draw_original(random.Random(0)).question
                except TemplateError:
                    continue
                if " ".join(question.split()) != " ".join(template.question.split()):
                    mismatched += 1
        print(f"--original differs from the template's own question text for {mismatched} templates")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
