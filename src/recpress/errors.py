"""Errors a user can cause. The CLI prints them as one message, no traceback, exit code 2."""

from __future__ import annotations


class RecPressError(Exception):
    """Base class of every user-facing error: the message says what is wrong and how to fix it."""

    exit_code: int = 2


class DataError(RecPressError):
    """A data file is missing or malformed.

    The message names the file and, where one is at fault, the 1-based line number.
    """

    def __init__(self, message: str, path: object | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(RecPressError):
    """A configuration value, option or name is not valid; the message names the field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__((f"{field}: " if field else "") + message)
        self.field = field
        self.message = message  # without the field, for callers that name it their own way


def unknown_name(
    kind: str, name: str, known: list[str] | tuple[str, ...], field: str | None = None
):
    """Build the error for an unknown registry name, listing the known ones."""
    return ConfigError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}", field=field)
