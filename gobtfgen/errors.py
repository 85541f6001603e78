"""Error types and problems shared by every stage.

A GobtfgenError stops the command: cli.main turns it into one line on stderr and an exit code.
A Problem is collected and reported: one kernel or one object went wrong, the run goes on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GobtfgenError(Exception):
    """An error the user can fix; the message names the file and the fix."""

    exit_code = 1


class UsageError(GobtfgenError):
    """Bad flags or environment values."""

    exit_code = 2


class InputError(GobtfgenError):
    """An input file (object, archive, BTF) is unusable."""


class ToolError(GobtfgenError):
    """An external program is missing, too old, or failed."""


class OutputError(GobtfgenError):
    """An output cannot be written (permissions, a file we did not generate, full disk)."""


class Level(enum.Enum):
    NOTE = "note"  # nothing is missing from the output; the user may want to know
    WARNING = "warning"  # output generated, but a piece is missing (a kernel, an object)
    ERROR = "error"  # nothing usable generated for this item


@dataclass(frozen=True, kw_only=True)
class Problem:
    level: Level
    subject: str  # the kernel key or file the problem is about
    message: str

    def __str__(self) -> str:
        return f"{self.level.value}: {self.subject}: {self.message}"
