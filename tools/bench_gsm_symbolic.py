"""Benchmark: every template of a GSM-Symbolic release (Apple's official files, from the user's own
copy) generated with default settings, timed, with each template's sampling method and acceptance.

    python tools/bench_gsm_symbolic.py ~/ml-gsm-symbolic/templates [--instances 50] [--seed 0]

Reads DIR/symbolic, DIR/p1 and DIR/p2 (each template with its own variant), in-process, exactly as
`toolkit-gsm-symbolic generate` does. Prints one line per template that was refused or is not sampled
by plain rejection, then the totals: templates written, instances, seconds, and the lowest
acceptance rates. `--original` also checks that `--original` reproduces each template's original
question text.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from plugins.gsm_symbolic.errors import TemplateError
from plugins.gsm_symbolic.sampler import TemplateSampler, generate
from plugins.gsm_symbolic.template import load_template, template_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", type=Path, help="folder holding symbolic/, p1/ and p2/")
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--original", action="store_true", help="also compare --original with each question")
    parser.add_argument("--noop", action="store_true", help="also run the noop variant on symbolic/ and report the clause fit")
    arguments = parser.parse_args(argv)
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
