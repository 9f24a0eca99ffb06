"""What the ``mdp`` command's modules share (``cli`` and its private parts)."""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A user error reported as one line on stderr; ``status`` is the exit status
    (2: usage, 1: run time)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status
