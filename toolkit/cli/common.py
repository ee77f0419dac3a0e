"""What every toolkit command shares: one-line errors and exit codes instead of tracebacks, and an
argument parser whose `--help` shows each option's default."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from typing import Any, Callable

from toolkit.config import format_config
from toolkit.errors import ToolkitError
from toolkit.registry import Component

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
DEBUG_ENV_VAR = "TOOLKIT_DEBUG"
DEBUG_ON_VALUES = ("1", "true", "yes")  # anything else, `0` and `false` included, keeps tracebacks off


def debug_enabled() -> bool:
    """Whether TOOLKIT_DEBUG asks for tracebacks (1, true or yes, in any case)."""
    return os.environ.get(DEBUG_ENV_VAR, "").strip().lower() in DEBUG_ON_VALUES


def shows_default(default: Any) -> bool:
    """Whether `--help` says an option's default: not for a flag, nothing, or an empty value."""
    return not (default is None or default is False or default is argparse.SUPPRESS or default in ("", []))


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless the help already says it; a description
    or epilog with line breaks of its own (a table of keys) is printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text or not shows_default(action.default):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text  # a required positional has no default to show
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return textwrap.indent(text, indent)
        return super()._fill_text(text, width, indent)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with `HelpFormatter`; its sub-command parsers get it too (argparse builds
    them with the parser's own class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # argparse leaves an option without help out of the help's details, default and all.
        if kwargs.get("help") is None and shows_default(kwargs.get("default")):
            kwargs["help"] = "default: %(default)s"
        return super().add_argument(*args, **kwargs)


def component_options(component: Component) -> list[str]:
    """A component's config keys with their defaults and help, for `--list-options` and `--options`."""
    title = f"{component.kind[:-1]} '{component.name}' (plugin {component.plugin})"
    if component.config_class is None:
        return [f"{title} takes no options"]
    return [f"{title}, its keys and their defaults:", *format_config(component.config_class)]


def recipe_arguments(prog: str, description: str, argv: list[str]) -> argparse.Namespace:
    """`RECIPE [key=value ...]`, the arguments of a tool that reads a recipe (`--help` too)."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("recipe", help="recipe YAML file, or a name in a plugin's recipe dir (openelm/tiny)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return parser.parse_args(argv)


def say_error(message: str) -> None:
    """`error: message` on stderr in one write: every rank of a job may report at once into the
    same log, and print's separate write of the newline let two ranks' lines run together."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def run_cli(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run `main`; a ToolkitError becomes `error: ...` on stderr and exit code 2 (128 + the signal
    for a training stopped by SIGINT/SIGTERM), and so does an operating-system error (naming the
    file); a closed output pipe ends the command quietly.

    Any other exception is a bug somewhere (the toolkit's or a plugin's): still one line, exit 1,
    with the traceback only when TOOLKIT_DEBUG is 1, true or yes.
    """
    arguments = sys.argv[1:] if argv is None else argv
    try:
        return main(arguments)
    except ToolkitError as error:
        if debug_enabled():
            traceback.print_exc()
        say_error(error.one_line())
        return error.exit_code
    except BrokenPipeError:  # the reader went away (`toolkit-plugins --json | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as error:  # the machine said no: a read-only directory, a full disk, a missing file
        if debug_enabled():
            traceback.print_exc()
        where = f"{error.filename}: " if error.filename else ""
        say_error(f"{where}{error.strerror or error}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 - last line of defence for the user's terminal
        if debug_enabled():
            traceback.print_exc()
        message = " ".join(f"{type(error).__name__}: {error}".split())
        say_error(f"internal error: {message} (set {DEBUG_ENV_VAR}=1 for the traceback)")
        return EXIT_INTERNAL_ERROR
