"""The one exception family raised by library code; the CLI prints it as one line and exits non-zero."""

from __future__ import annotations


class ToolkitError(Exception):
    """Base of every error the toolkit raises on purpose.

    `hint` is an optional second clause telling the user what to do about it.
    """

    exit_code = 2  # what the CLI exits with

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} (hint: {self.hint})"
        return " ".join(text.split())


class RecipeError(ToolkitError):
    """A recipe file or override is missing, malformed, or does not match a config dataclass."""


class RegistryError(ToolkitError):
    """A component name is unknown, or two plugins registered the same name."""


class PluginError(ToolkitError):
    """A plugin failed to import or to register its components."""


class DataError(ToolkitError):
    """A shard, tokenizer or data directory is missing, truncated or corrupt."""


class CheckpointError(ToolkitError):
    """A checkpoint directory is missing, incomplete, corrupt, or holds unsafe content."""


class TrainingError(ToolkitError):
    """Training cannot continue (for example the loss became NaN)."""


class Interrupted(TrainingError):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint; exits 128 + the signal."""

    def __init__(self, message: str, hint: str | None = None, signal_number: int = 2) -> None:
        super().__init__(message, hint)
        self.exit_code = 128 + signal_number
