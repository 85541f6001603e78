"""Running the example tracers (examples/lab3 in Go, examples/libbpf in C) from the end-to-end
tests: tracefs mounted when missing, and a tracer whose output is read without blocking."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

TRACEFS = Path("/sys/kernel/tracing")


def tracefs_mounted() -> bool:
    return (TRACEFS / "events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir()


def ensure_tracefs() -> None:
    """Tracepoints attach through tracefs; mount it when the machine has not. It stays mounted,
    as on any distribution: unmounting it would pull it from under anything else tracing here
    (another test session included)."""
    if tracefs_mounted():
        return
    if os.geteuid() != 0:
        pytest.skip(reason="tracefs is not mounted and only root can mount it; run the tests "
                           "as root")
    mounted = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                             capture_output=True, text=True)
    if not tracefs_mounted():
        pytest.skip(reason=f"tracefs is not mounted and mounting it failed "
                           f"({mounted.stderr.strip()}); mount -t tracefs nodev {TRACEFS} "
                           "(as root) to run it")


@pytest.fixture(scope="module")
def tracefs() -> None:
    ensure_tracefs()


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    """A copy of true(1) under a name no other process uses: comm and filename are known."""
    path = tmp_path / f"gbtprobe{os.getpid() % 100000}"
    shutil.copy2(shutil.which("true") or "/bin/true", path)
    return path


class Tracer:
    """A running tracer whose stdout and stderr are read line by line without blocking; stdout
    carries one JSON event per line."""

    def __init__(self, binary: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = binary.name
        self.proc = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self.events: list[dict[str, object]] = []  # every event read so far
        for stream, q in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream: object, q: queue.Queue[str | None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))
        q.put(None)

    def stderr_until(self, marker: str, timeout: float) -> list[str]:
        """stderr lines up to the one containing marker; fails with everything seen if the
        process ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.stderr.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.kill()
                pytest.fail(f"{self.name} never printed {marker!r}; stderr:\n"
                            + "\n".join(self.stderr_lines))
            self.stderr_lines.append(line)
            if marker in line:
                return self.stderr_lines

    def next_event(self, timeout: float) -> dict[str, object] | None:
        """The next event, or None once the tracer has ended its output."""
        line = self.stdout.get(timeout=timeout)
        if line is None:
            return None
        event: dict[str, object] = json.loads(line)
        self.events.append(event)
        return event

    def event_for(self, filename: str, timeout: float) -> dict[str, object]:
        """The first event for an exec of filename; fails with the last events seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.next_event(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert event is not None, f"{self.name} exited early: {self.stderr_lines}"
            if event["filename"] == filename:
                return event
        pytest.fail(f"no event for {filename} among {len(self.events)}: {self.events[-5:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
