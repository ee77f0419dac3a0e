"""What a newcomer finds without reading the source: the recipes, a suggestion for a mistyped recipe,
defaults in every `--help`, an evaluator's options, config checks in `--dry-run`, YAML errors with a
line and column, and tracebacks only when TOOLKIT_DEBUG asks for them.

Most run the commands' own `main` in this process through `run_cli` (what each console script
calls), so the exit code and the `error:` line are the real ones without a subprocess per case.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
import tomllib
from importlib import import_module

import pytest

from helpers import REPO, assert_one_line_error
from toolkit.cli import eval as eval_cli
from toolkit.cli import plugins as plugins_cli
from toolkit.cli import train as train_cli
from toolkit.cli.common import HelpFormatter, run_cli
from toolkit.errors import RecipeError
from toolkit.plugins import get_registries
from toolkit.recipe import find_recipe, list_recipes

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def cli(main, argv: list[str], capsys) -> subprocess.CompletedProcess:
    """`main` run as its console script runs it: exit code, stdout and stderr."""
    code = run_cli(main, argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def test_list_recipes_shows_every_plugin_recipe_by_the_name_that_finds_it(capsys):
    result = cli(train_cli.main_with_arguments, ["--list-recipes"], capsys)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines}
    assert rows["openelm/tiny"] == "openelm" and rows["catlip/tiny"] == "catlip"
    assert rows["transfer/fashion_mnist"] == "transfer"
    tiny = next(line for line in lines if line.startswith("openelm/tiny "))
    assert "A ~5M-parameter OpenELM trained on Shakespeare" in tiny
    registries = get_registries()
    for name in rows:  # each listed name is one toolkit-train accepts
        assert find_recipe(name, registries.recipe_dirs) == next(
            entry.path for entry in list_recipes(registries.recipe_dirs) if entry.name == name)
    plugins = cli(plugins_cli.main_with_arguments, ["--json"], capsys)
    assert '"openelm/tiny"' in plugins.stdout


@pytest.mark.parametrize(("name", "suggestion"), [
    ("openelm/tinny", "did you mean 'openelm/tiny'?"),
    ("openelm/tiny.yml", "did you mean 'openelm/tiny.yaml'?"),
    ("catlip/vit_b61.yaml", "did you mean 'catlip/vit_b16.yaml'?"),
])
def test_a_mistyped_recipe_gets_a_suggestion(tmp_path, capsys, name, suggestion):
    result = cli(train_cli.main_with_arguments, [name, f"trainer.out_dir={tmp_path / 'run'}"], capsys)
    assert_one_line_error(result, f"recipe file not found: {name}", suggestion, "--list-recipes")
    assert not (tmp_path / "run").exists()


def test_a_mistyped_local_recipe_or_base_gets_a_suggestion(tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("base: openelm/tinny.yaml\n")
    typo = cli(train_cli.main_with_arguments, [str(tmp_path / "mien.yaml"), "--dry-run"], capsys)
    assert_one_line_error(typo, f"did you mean '{tmp_path / 'mine.yaml'}'?")
    base = cli(train_cli.main_with_arguments, [str(tmp_path / "mine.yaml"), "--dry-run"], capsys)
    assert_one_line_error(base, "recipe file not found: openelm/tinny.yaml", "did you mean 'openelm/tiny.yaml'?")


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("base: openelm/tiny.yaml\ntrainer:\n  max_steps: 3\n    seed: 1\n", ":4:9:", "mapping values are not allowed"),
    ("base: openelm/tiny.yaml\noptim: {name: adamw, lr: [1, 2}\n", ":2:31:", "expected ',' or ']'"),
    ("base: openelm/tiny.yaml\ntrainer:\n\tmax_steps: 3\n", ":3:1:", "cannot start any token"),
])
def test_yaml_syntax_errors_name_file_line_and_column(tmp_path, capsys, text, where, problem):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(text)
    result = cli(train_cli.main_with_arguments, [str(recipe), "--dry-run"], capsys)
    assert_one_line_error(result, f"{recipe}{where} not valid YAML", problem)


@pytest.mark.parametrize(("override", "fragment"), [
    ("trainer.precision=fp16", "trainer.precision: Invalid value 'fp16', expected one of [fp32, bf16]"),
    ("trainer.max_steps=-5", "trainer.max_steps: must be >= 0, got -5"),
    ("trainer.log_every=-1", "trainer.log_every: must be >= 0, got -1"),
    ("optim.lr=-1", "optim.lr: must be >= 0, got -1.0"),
    ("optim.betas=[0.9]", "optim.betas: expected two numbers in [0, 1), got [0.9]"),
    ("optim.weight_decay=-0.1", "optim.weight_decay: must be >= 0"),
    ("schedule.min_lr_ratio=2", "schedule.min_lr_ratio: must be in [0, 1], got 2.0"),
    ("schedule.warmup_steps=-1", "schedule.warmup_steps: must be >= 0, got -1"),
    ("data.seq_len=0", "data.seq_len: must be >= 1, got 0"),
    ("loss.z_loss=-1", "loss.z_loss: must be >= 0, got -1.0"),
])
def test_dry_run_runs_the_trainer_and_optimizer_checks(tmp_path, capsys, override, fragment):
    result = cli(train_cli.main_with_arguments, ["openelm/tiny", override, "--dry-run"], capsys)
    assert_one_line_error(result, fragment)
    assert result.stdout == ""  # refused before the model is built or its size printed


def test_a_negative_learning_rate_is_refused_by_a_real_run_before_anything_is_written(tmp_path, capsys):
    out_dir = tmp_path / "run"
    result = cli(train_cli.main_with_arguments, ["openelm/tiny", "optim.lr=-1", f"trainer.out_dir={out_dir}"], capsys)
    assert_one_line_error(result, "optim.lr: must be >= 0, got -1.0")
    assert not out_dir.exists()


def _help_text(monkeypatch, capsys, script: str, *arguments: str) -> tuple[str, list[type]]:
    """`script --help` run in this process: its help text and the formatter class of each help printed."""
    module_name, function_name = SCRIPTS[script].split(":")
    main = getattr(import_module(module_name), function_name)
    formatters: list[type] = []
    original = HelpFormatter.__init__

    def record(self, *args, **kwargs):
        formatters.append(type(self))
        original(self, *args, **kwargs)

    monkeypatch.setattr(HelpFormatter, "__init__", record)
    monkeypatch.setattr(sys, "argv", [script, *arguments, "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    return capsys.readouterr().out, formatters


@pytest.mark.parametrize(("script", "arguments", "shown"), [
    ("toolkit-train", [], ["trainer.max_steps=100           optimizer steps", "trainer.progress_every_s=30.0",
                           "trainer.ema_decay=0.0           >0 keeps an exponential moving average",
                           "dist.strategy=ddp                (one of: ddp, fsdp)",
                           "dist.reshard_after_forward=true  fsdp only: false keeps"]),
    ("toolkit-plugins", [], ["--options KIND NAME"]),
    ("toolkit-generate", [], ["--max-new-tokens MAX_NEW_TOKENS\n                        default: 200", "(default: 0.8)"]),
    ("toolkit-tokenizer", ["train"], ["default: bpe"]),
    ("toolkit-export", [], ["--format {hf,hf-llama}"]),
    ("toolkit-gsm-symbolic", ["generate"], ["instances per template (default: 50)"]),
    ("toolkit-eval", [], ["default: 8", "(default: auto)", "toolkit-eval EVALUATOR --list-options"]),
    ("toolkit-catlip-vocab", [], ["(default:"]),
    ("toolkit-bench", [], ["--device NAME", "warmup_steps: 2", "(default: bench/<sweep name>)"]),
    ("toolkit-soup", [], ["0,0.25,0.5,0.75,1)", "validation batches per point (0 = all) (default: 0)"]),
])
def test_every_console_script_help_shows_defaults(monkeypatch, capsys, script, arguments, shown):
    text, formatters = _help_text(monkeypatch, capsys, script, *arguments)
    assert formatters, f"{script} --help did not use the toolkit's HelpFormatter"
    for fragment in shown:
        assert fragment in text, text


def test_every_console_script_is_covered_by_the_help_test():
    covered = {values[0] for values in test_every_console_script_help_shows_defaults.pytestmark[0].args[1]}
    assert covered == set(SCRIPTS)


def test_eval_lists_an_evaluators_options(capsys):
    result = cli(eval_cli.main_with_arguments, ["gsm8k", "--list-options"], capsys)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "evaluator 'gsm8k' (plugin lm_eval), its keys and their defaults:"
    assert "  num_shots=8" in lines
    assert any(line.startswith("  seed=1234") and line.endswith("draws the shots") for line in lines)
    typo = cli(eval_cli.main_with_arguments, ["gsm8", "--list-options"], capsys)
    assert_one_line_error(typo, "unknown evaluator 'gsm8'", "did you mean 'gsm8k'?")


def test_plugins_lists_a_components_options(capsys):
    result = cli(plugins_cli.main_with_arguments, ["--options", "optimizer", "adamw"], capsys)
    assert result.returncode == 0, result.stderr
    assert "  lr=0.001            peak learning rate (the schedule scales it)" in result.stdout.splitlines()
    typo = cli(plugins_cli.main_with_arguments, ["--options", "optimisers", "adamw"], capsys)
    assert_one_line_error(typo, "--options: unknown kind 'optimisers'", "did you mean 'optimizers'?")


@pytest.mark.parametrize("tool", sorted(path.name for path in (REPO / "tools").glob("*.py")))
def test_every_tool_answers_help(monkeypatch, capsys, tool):
    monkeypatch.setattr(sys, "argv", [tool, "--help"])
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO / "tools" / tool), run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {tool}")


@pytest.mark.parametrize(("value", "traceback_shown"), [
    ("0", False), ("false", False), ("", False), ("1", True), ("true", True), ("YES", True),
])
def test_toolkit_debug_turns_tracebacks_on_only_for_1_true_or_yes(monkeypatch, capsys, value, traceback_shown):
    monkeypatch.setenv("TOOLKIT_DEBUG", value)

    def refuse(argv):
        raise RecipeError("bad recipe")

    def crash(argv):
        raise ZeroDivisionError("oops")

    for main, code in ((refuse, 2), (crash, 1)):
        assert run_cli(main, []) == code
        stderr = capsys.readouterr().err
        assert ("Traceback" in stderr) is traceback_shown, stderr
        assert stderr.splitlines()[-1].startswith("error: ")
