"""One error type for everything a user can get wrong.

The CLI turns an `MmnerError` into a single line on stderr and exit code 2, so every message must
say where the problem is (file and line, config key, post id) and what would fix it.
"""

from __future__ import annotations

from pathlib import Path


class MmnerError(Exception):
    """Bad input: a malformed file, an unknown label or config key, a missing resource."""


class Interrupted(Exception):
    """Work stopped from outside (Ctrl-C, SIGTERM) that can be continued; the CLI prints the message
    (what was kept, how to go on) and exits with `exit_code` (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def at(path: str | Path, line: int | None, problem: str) -> MmnerError:
    """An error located at `path:line`, the way compilers print them."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return MmnerError(f"{where}: {problem}")
