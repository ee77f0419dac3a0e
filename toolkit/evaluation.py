"""The evaluator contract behind `toolkit-eval`, and the resumable per-sample store it runs on.

An evaluator plugin registers `factory(config) -> Evaluator` with `register_evaluators`. The core
knows nothing about what is evaluated: the evaluator loads its own kind of model from the
`--model` spec (`load_model`), then scores it (`evaluate`) through an `EvalContext`, whose
`map_samples` runs the per-sample work in batches with a progress bar and a cache on disk
(`samples.partial.jsonl`, one JSON record per line, keyed by sample id, appended as it goes) so
an interrupted run resumes where it stopped. `run_evaluation` then writes `results.json` and
`samples.jsonl` atomically and removes the partial cache.

An output directory belongs to one (evaluator, model): results or a partial cache of another are
never replaced silently (`overwrite=True`, `toolkit-eval --overwrite`, allows it). A model handle
may offer `truncation_report() -> str | None` (inputs longer than its context, with counts); the
report becomes one warning on stderr and a note in results.json; so does the
`decoding_report()` of a `--decoder` wrapper held as the handle's `model` (toolkit.decoding).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from toolkit.capabilities import HoldsNetwork, ReportsTruncation
from toolkit.decoding import decoding_report
from toolkit.errors import ToolkitError
from toolkit.progress import progress
from toolkit.files import atomic_write_bytes, atomic_write_text

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
PARTIAL_FILE = "samples.partial.jsonl"


class EvaluationError(ToolkitError):
    """An evaluation cannot run: bad options, missing data, an unusable output directory."""


class Evaluator(Protocol):
    """What `register_evaluators` factories return."""

    def load_model(self, spec: str, device: str, **options: str) -> Any:
        """The model handle this evaluator scores, from a `--model` spec (raise ToolkitError if unusable).

        `options` carry what the command line adds about the model (`tokenizer=PATH` with
        `toolkit-eval --tokenizer`); an evaluator that takes none may omit the parameter.

        A handle may carry `identity` (a string naming exactly what was loaded, such as the resolved
        checkpoint directory); it is part of the cache fingerprint, so a resumed run never mixes
        samples of two different checkpoints.
        """

    def evaluate(self, model: Any, context: EvalContext) -> dict[str, Any]:
        """Score `model`; per-sample records go through `context.map_samples`. Returns the metrics."""


def write_atomically(path: Path, text: str) -> None:
    """Write `text` next to `path`, then rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`write_atomically` for binary artifacts (plots)."""
    atomic_write_bytes(path, data)


class SampleCache:
    """Records of finished samples, on disk in `PARTIAL_FILE` under a header naming the run.

    The header holds a fingerprint of everything that decides the records (evaluator, options,
    model); a cache from a different run is discarded rather than mixed in. A torn last line (the
    process died mid-write) is ignored.
    """

    def __init__(self, directory: Path, fingerprint: dict[str, Any]) -> None:
        self.path = directory / PARTIAL_FILE
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file() and not self._load():
            self.path.unlink()
        if not self.path.is_file():
            write_atomically(self.path, json.dumps({"fingerprint": self.fingerprint}, sort_keys=True) + "\n")

    def _load(self) -> bool:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise EvaluationError(f"{self.path}: unreadable sample cache ({error})",
                                  hint="delete it to start the evaluation over") from error
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            return False
        if header.get("fingerprint") != self.fingerprint:
            return False
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn write at the moment of interruption
            if isinstance(record, dict) and "id" in record:
                self.records[str(record["id"])] = record
        # Rewrite without any torn line so later appends start on a clean line.
        body = [json.dumps({"fingerprint": self.fingerprint}, sort_keys=True)]
        body += [json.dumps(record, ensure_ascii=False) for record in self.records.values()]
        write_atomically(self.path, "\n".join(body) + "\n")
        return True

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        lines = []
        for record in records:
            self.records[str(record["id"])] = record
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.writelines(lines)
            stream.flush()
            os.fsync(stream.fileno())


@dataclass
class EvalContext:
    """What an evaluator gets besides the model: limits, batching and the sample store."""

    output_dir: Path
    fingerprint: dict[str, Any]
    limit: int | None = None
    batch_size: int = 8
    progress: bool = True
    samples: list[dict[str, Any]] = field(default_factory=list)  # in evaluation order
    notes: list[str] = field(default_factory=list)
    cache: SampleCache | None = None  # opened by the first `map_samples`, so refused runs write nothing

    def open_cache(self) -> SampleCache:
        if self.cache is None:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise EvaluationError(f"{self.output_dir}: cannot create the output directory "
                                      f"({error.strerror})") from error
            self.cache = SampleCache(self.output_dir, self.fingerprint)
        return self.cache

    def map_samples(
        self,
        items: Sequence[tuple[str, Any]],
        compute: Callable[[list[Any]], list[dict[str, Any]]],
        description: str = "samples",
    ) -> list[dict[str, Any]]:
        """Records for `(sample_id, payload)` items: cached ones reused, the rest computed in batches.

        `compute(payloads) -> records` (one dict per payload; its `id` is set here). Each batch is
        appended to the cache as soon as it is done. Returns the records in item order.
        """
        cache = self.open_cache()
        pending = [(sample_id, payload) for sample_id, payload in items if sample_id not in cache.records]
        with progress(len(items), len(items) - len(pending), description, enabled=self.progress) as bar:
            for start in range(0, len(pending), max(1, self.batch_size)):
                batch = pending[start:start + max(1, self.batch_size)]
                records = compute([payload for _, payload in batch])
                if len(records) != len(batch):
                    raise EvaluationError(f"evaluator returned {len(records)} records for {len(batch)} samples")
                cache.add({"id": sample_id, **record} for (sample_id, _), record in zip(batch, records))
                bar.update(len(batch))
        ordered = [cache.records[sample_id] for sample_id, _ in items]
        self.samples.extend(ordered)
        return ordered


def _owner(record: dict[str, Any]) -> tuple[Any, Any]:
    return record.get("evaluator"), record.get("model")


def check_output_owner(output_dir: Path, fingerprint: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse an output directory holding another evaluator's or model's results (or partial cache)."""
    if overwrite or not output_dir.is_dir():
        return
    for name in (RESULTS_FILE, PARTIAL_FILE):
        try:
            with open(output_dir / name, encoding="utf-8") as stream:
                first = stream.readline() if name == PARTIAL_FILE else stream.read()
            record = json.loads(first)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # nothing (readable) there to protect
        record = record.get("fingerprint", {}) if name == PARTIAL_FILE and isinstance(record, dict) else record
        if isinstance(record, dict) and _owner(record) != _owner(fingerprint):
            evaluator, model = _owner(record)
            whose = f"another model, {model}" if model != fingerprint.get("model") else \
                f"this model, not {fingerprint.get('evaluator')} results"
            raise EvaluationError(f"{output_dir}: holds {evaluator} results of {whose} ({name})",
                                  hint="choose another --output, or pass --overwrite to replace them")


def run_evaluation(evaluator: Evaluator, model: Any, output_dir: Path, fingerprint: dict[str, Any],
                   limit: int | None = None, batch_size: int = 8, progress: bool = True,
                   overwrite: bool = False) -> dict[str, Any]:
    """Evaluate, then write `results.json` and `samples.jsonl` (atomically) and drop the cache."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise EvaluationError(f"{output_dir}: exists and is not a directory")
    check_output_owner(output_dir, fingerprint, overwrite)
    context = EvalContext(output_dir, fingerprint, limit=limit, batch_size=batch_size, progress=progress)
    metrics = evaluator.evaluate(model, context)
    truncation = model.truncation_report() if isinstance(model, ReportsTruncation) else None
    if truncation:
        print(f"warning: {truncation}", file=sys.stderr)
        context.notes.append(truncation)
    decoded = decoding_report(model.model) if isinstance(model, HoldsNetwork) else None  # what --decoder did
    if decoded:
        print(decoded, file=sys.stderr)
        context.notes.append(decoded)
    cache = context.open_cache()
    results = {**fingerprint, "metrics": metrics, "num_samples": len(context.samples)}
    if context.notes:
        results["notes"] = context.notes
    samples_text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in context.samples)
    write_atomically(output_dir / SAMPLES_FILE, samples_text)
    write_atomically(output_dir / RESULTS_FILE, json.dumps(results, indent=2, default=str) + "\n")
    cache.path.unlink(missing_ok=True)
    return results
