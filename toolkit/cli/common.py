"""What every toolkit command shares: one-line errors and exit codes instead of tracebacks."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from toolkit.errors import ToolkitError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
DEBUG_ENV_VAR = "TOOLKIT_DEBUG"


def run_cli(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run `main`; a ToolkitError becomes `error: ...` on stderr and exit code 2 (128 + the signal
    for a training stopped by SIGINT/SIGTERM), and so does an operating-system error (naming the
    file); a closed output pipe ends the command quietly.

    Any other exception is a bug somewhere (the toolkit's or a plugin's): still one line, exit 1,
    with the traceback only when TOOLKIT_DEBUG=1.
    """
    arguments = sys.argv[1:] if argv is None else argv
    try:
        return main(arguments)
    except ToolkitError as error:
        if os.environ.get(DEBUG_ENV_VAR):
            traceback.print_exc()
        print(f"error: {error.one_line()}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # the reader went away (`toolkit-plugins --json | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as error:  # the machine said no: a read-only directory, a full disk, a missing file
        if os.environ.get(DEBUG_ENV_VAR):
            traceback.print_exc()
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - last line of defence for the user's terminal
        if os.environ.get(DEBUG_ENV_VAR):
            traceback.print_exc()
        message = " ".join(f"{type(error).__name__}: {error}".split())
        print(f"error: internal error: {message} (set {DEBUG_ENV_VAR}=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
