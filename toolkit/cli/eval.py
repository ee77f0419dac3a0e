"""`toolkit-eval EVALUATOR --model SPEC [--limit N] [--batch-size N] [--output DIR] [key=value ...]`.

`toolkit-eval EVALUATOR --list-options` prints the evaluator's keys with their defaults.
`--decoder NAME --decoder-options YAML` scores the model through a registered decoding path
(toolkit.decoding), the one `toolkit-generate --decoder` times.

Runs any registered evaluator on any model it can load. `key=value` set fields of the evaluator's
config dataclass (checked like recipe sections). Writes `results.json` and `samples.jsonl` to the
output directory; an interrupted run resumes from `samples.partial.jsonl` there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any

import torch
import yaml

from toolkit.capabilities import HoldsNetwork, identity
from toolkit.cli.common import ArgumentParser, component_options, run_cli
from toolkit.decoding import build_decoder, check_decoder_arguments
from toolkit.errors import RecipeError
from toolkit.evaluation import RESULTS_FILE, EvaluationError, run_evaluation
from toolkit.plugins import get_registries
from toolkit.recipe import build_config


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-eval", description=__doc__.splitlines()[0],
                            epilog="an evaluator's keys and their defaults: toolkit-eval EVALUATOR --list-options")
    parser.add_argument("evaluator", help="evaluator name (toolkit-plugins lists them)")
    parser.add_argument("options", nargs="*", help="evaluator options as key=value")
    parser.add_argument("--list-options", action="store_true", help="print the evaluator's keys and defaults, exit")
    parser.add_argument("--model",
                        help="toolkit run or checkpoint directory, Hugging Face model directory, or .gguf file")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer file for models that ship none (Apple's OpenELM: LLaMA's tokenizer.model; "
                             "toolkit runs and exports carry their own)")
    parser.add_argument("--model-name", default=None,
                        help="which model of a toolkit run that trains several (an RL run's policy or value)")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate at most N items (windows, questions, or templates per set)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path, default=None,
                        help="default: eval/<evaluator>-<model name>-<8 hex digits of the model's full path>")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results of another evaluator or model already in the output directory")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--decoder", default=None,
                        help="score the model through this registered decoding path (toolkit-plugins lists decoders)")
    parser.add_argument("--decoder-options", default="{}", help="that decoder's options as a YAML mapping")
    arguments = parser.parse_intermixed_args(argv)
    if arguments.model is None and not arguments.list_options:
        parser.error("the following arguments are required: --model")
    return arguments


def parse_options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise EvaluationError(f"evaluator option '{pair}' is not key=value")
        options[key.strip()] = value
    return options


def typed_options(config_class: type, options: dict[str, str]) -> dict[str, Any]:
    """`options` with each list-valued field's text read as a YAML flow list (`windows=[1, 4, 16]`);
    every other value stays text, which the typed config converts (and checks) itself."""
    try:
        hints = typing.get_type_hints(config_class)
    except (NameError, TypeError):  # an annotation that does not resolve here: leave every value as text
        hints = {}
    typed: dict[str, Any] = dict(options)
    for key, value in options.items():
        if typing.get_origin(hints.get(key)) not in (list, tuple):
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = None
        if not isinstance(parsed, list):
            raise EvaluationError(f"evaluator option '{key}={value}': {key} takes a list",
                                  hint=f"write it as {key}=[a, b, c]")
        typed[key] = parsed
    return typed


def default_output(evaluator: str, model: str, model_name: str | None = None) -> Path:
    """`eval/<evaluator>-<model name>-<hash>`: two models of one name (`runs/a/tiny`, `runs/b/tiny`)
    never share a directory, as lm-evaluation-harness keeps one folder per model path; the same
    model gets the same directory again, so an interrupted evaluation resumes there."""
    resolved = Path(model).resolve()
    digest = hashlib.sha256(str(resolved).encode("utf-8")).hexdigest()[:8]
    picked = f"-{model_name}" if model_name else ""  # a run's policy and value never share a folder
    return Path("eval") / f"{evaluator}-{resolved.name}{picked}-{digest}"


def apply_decoder(handle: Any, evaluator: str, name: str, options_text: str) -> None:
    """Swap the handle's model for the decoder's wrapper (a handle keeps its network as `.model`)."""
    if not (isinstance(handle, HoldsNetwork) and isinstance(handle.model, torch.nn.Module)):
        raise EvaluationError(f"evaluator '{evaluator}' scores models that cannot take --decoder")
    handle.model = build_decoder(name, options_text, handle.model)


def main_with_arguments(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.limit is not None and arguments.limit < 1:
        raise EvaluationError("--limit must be at least 1")
    if arguments.batch_size < 1:
        raise EvaluationError("--batch-size must be at least 1")
    check_decoder_arguments(arguments.decoder, arguments.decoder_options)
    component = get_registries()["evaluators"].get(arguments.evaluator)
    if arguments.list_options:
        print("\n".join(component_options(component)))
        return 0
    options = parse_options(arguments.options)
    if component.config_class is None:
        if options:
            raise EvaluationError(f"evaluator '{component.name}' takes no options, got {sorted(options)}")
        config = None
    else:
        try:
            config = build_config(component.config_class, typed_options(component.config_class, options),
                                  component.name)
        except RecipeError as error:
            raise EvaluationError(error.message, hint=error.hint) from error
    evaluator = component.factory(config)
    device = arguments.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # Everything that can be refused is checked before the output directory is touched.
    model_options = {key: value for key, value in (("tokenizer", arguments.tokenizer),
                                                   ("model_name", arguments.model_name)) if value}
    accepted = inspect.signature(evaluator.load_model).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        for key in model_options:
            if key not in accepted:
                raise EvaluationError(f"evaluator '{component.name}' takes no --{key.replace('_', '-')}")
    model = evaluator.load_model(arguments.model, device, **model_options)
    if arguments.decoder is not None:
        apply_decoder(model, component.name, arguments.decoder, arguments.decoder_options)
    output = arguments.output or default_output(component.name, arguments.model, arguments.model_name)
    fingerprint = {
        "evaluator": component.name,
        "plugin": component.plugin,
        "model": str(Path(arguments.model).resolve()),
        "model_identity": identity(model),
        "config": dataclasses.asdict(config) if config is not None else {},
        "limit": arguments.limit,
    }
    if arguments.decoder is not None:  # another path, other results: never mixed in one sample cache
        fingerprint["decoder"] = {"name": arguments.decoder, "options": arguments.decoder_options}
    results = run_evaluation(evaluator, model, output, fingerprint, limit=arguments.limit,
                             batch_size=arguments.batch_size, progress=not arguments.no_progress,
                             overwrite=arguments.overwrite)
    shown = {key: value for key, value in results["metrics"].items() if isinstance(value, (int, float))}
    print(json.dumps(shown))
    print(f"wrote {output / RESULTS_FILE}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(main_with_arguments, argv))


if __name__ == "__main__":
    main()
