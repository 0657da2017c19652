"""One exception type for mistakes a user can fix, so the CLI can show them without a traceback."""

from __future__ import annotations


class SparringError(Exception):
    """A user-facing error: what is wrong, and what to do instead.

    The CLI prints ``str(error)`` (and the hint) in one short message; ``--debug`` shows the
    traceback. Raise it for bad input, never for bugs.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
