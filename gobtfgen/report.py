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


def print_problems(problems: Sequence[Problem], *, stream: TextIO | None = None,
                   limit: int = 50) -> None:
    stream = stream or sys.stderr
    ordered = sorted(problems, key=lambda p: ([Level.ERROR, Level.WARNING, Level.NOTE].index(
        p.level), p.subject))
    for problem in ordered[:limit]:
        print(f"gobtfgen: {problem}", file=stream)
    if len(ordered) > limit:
        print(f"gobtfgen: ... and {len(ordered) - limit} more (see the manifest)", file=stream)
