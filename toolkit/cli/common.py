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
    """Run `main`; a ToolkitError becomes `error: ...` on stderr and exit code 2.

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
