"""What the user sees: a progress bar on a terminal, the summary, the supported-kernels list."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from gobtfgen.errors import Level, Problem


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, *, label: str, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.label = label
        self.done = 0
        self.counts: Counter[str] = Counter()
        self._last = 0.0

    def advance(self, status: str) -> None:
        self.done += 1
        self.counts[status] += 1
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            detail = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.done}/{self.total} {self.label} ({detail})\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


_RANK = {Level.ERROR: 0, Level.WARNING: 1, Level.NOTE: 2}


def is_skip_note(problem: Problem) -> bool:
    """A note that an input was left out of the run (an object, an arch's kernels)."""
    return problem.level is Level.NOTE and problem.message.endswith("skipped")


def problem_lines(problems: Sequence[Problem], *, where: str | None = None,
                  examples: int = 3) -> list[str]:
    """One line per kind of problem (level and message), with a count and examples.

    58 objects with fentry programs give one warning line, not 58 lines that push everything
    else off the screen. Notes about skipped inputs name every input: the user has to know
    which objects did not make it into the output. `where` names the file that holds every
    problem (the manifest), said only when a line leaves subjects out.
    """
    kinds: dict[tuple[Level, str], list[Problem]] = {}
    for problem in sorted(problems, key=lambda p: (_RANK[p.level], p.subject, p.message)):
        group = kinds.setdefault((problem.level, _kind_of(problem)), [])
        if problem not in group:
            group.append(problem)
    lines = []
    for (level, kind), group in sorted(kinds.items(), key=lambda kv: (_RANK[kv[0][0]],
                                                                      kv[1][0].subject)):
        if len(group) == 1:
            lines.append(f"{level.value}: {group[0].subject}: {group[0].message}")
            continue
        subjects = [p.subject for p in group]
        shown = subjects if is_skip_note(group[0]) else subjects[:examples]
        more = len(subjects) - len(shown)
        tail = f" and {more} more" + (f" (all in {where})" if where else "") if more else ""
        lines.append(f"{level.value}: {kind} ({len(subjects)}): {', '.join(shown)}{tail}")
    return lines


def _kind_of(problem: Problem) -> str:
    """The message with what names its subject (`<file>` for a path holding it) left out, so
    the same failure on many kernels is one kind."""
    words = problem.message.split(" ")
    return " ".join("<file>" if problem.subject in w and w != problem.subject else w
                    for w in words).replace(problem.subject, "<subject>")


def print_problems(problems: Sequence[Problem], *, stream: TextIO | None = None,
                   where: str | None = None) -> None:
    stream = stream or sys.stderr
    for line in problem_lines(problems, where=where):
        print(f"gobtfgen: {line}", file=stream)
