"""The error raised for every problem with a template: malformed file, unsafe or unknown
expression, unknown vocabulary, conditions that cannot be met."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import ToolkitError


class TemplateError(ToolkitError):
    """A GSM-Symbolic template is malformed, unsafe, or cannot produce an instance."""


@dataclass(frozen=True)
class Location:
    """Where an expression came from, so every error can name the file and the line.

    `line` counts lines inside `field` (template JSON files keep each field on one physical line,
    so the line inside the field is the one a template author can act on).
    """

    file: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.field:
            parts.append(self.field)
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts)

    def error(self, message: str) -> TemplateError:
        return TemplateError(f"{self}: {message}")
