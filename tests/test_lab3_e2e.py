"""examples/lab3 end to end, on the real kernel: `make` builds the tracer with BTF embedded for
this host's kernel (plus the sample archive), and the binary, told to ignore the kernel's own
BTF, reports a process this test starts with the right pid, ppid, comm and filename."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import lab3build

pytestmark = [pytest.mark.tools, pytest.mark.slow]

TRACEFS = Path("/sys/kernel/tracing")
COUNT = 200  # -count: large enough that other processes exec'ing meanwhile cannot crowd us out


@pytest.fixture(scope="module")
def main_build(tmp_path_factory: pytest.TempPathFactory) -> lab3build.Build:
    return lab3build.build("main", tmp_path_factory)


def _tracefs_mounted() -> bool:
    return (TRACEFS / "events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir()


@pytest.fixture(scope="module")
def tracefs() -> None:
    """Tracepoints attach through tracefs; mount it when the machine has not. It stays mounted,
    as on any distribution: unmounting it would pull it from under anything else tracing here
    (another test session included)."""
    if _tracefs_mounted():
        return
    if os.geteuid() != 0:
        pytest.skip(reason="tracefs is not mounted and only root can mount it")
    mounted = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                             capture_output=True, text=True)
    if not _tracefs_mounted():
        pytest.skip(reason=f"tracefs is not mounted and mounting it failed: "
                           f"{mounted.stderr.strip()}")


class Tracer:
    """A running ./lab3 whose stdout and stderr are read line by line without blocking."""

    def __init__(self, binary: Path, *args: str) -> None:
        self.proc = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
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
                pytest.fail(f"lab3 never printed {marker!r}; stderr:\n" +
                            "\n".join(self.stderr_lines))
            self.stderr_lines.append(line)
            if marker in line:
                return self.stderr_lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    """A copy of true(1) under a name no other process uses: comm and filename are known."""
    path = tmp_path / f"lab3probe{os.getpid() % 100000}"
    shutil.copy2(shutil.which("true") or "/bin/true", path)
    return path


def test_embedded_btf_reports_known_process(main_build: lab3build.Build, tracefs: None,
                                            probe: Path) -> None:
    tracer = Tracer(main_build.binary, "-embedded-btf", "-json", "-count", str(COUNT),
                    "-timeout", "90s")
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: embedded {lab3build.host_key()}" in stderr, stderr
        # fentry cannot work without the kernel's own BTF: lab3 says so and goes on.
        assert any("fentry/security_bprm_check skipped" in line for line in stderr), stderr

        # The parent is this test process; the child execs the probe by its full path.
        child = subprocess.Popen([str(probe)])
        child.wait(timeout=30)
        events: list[dict[str, object]] = []
        ours = None
        deadline = time.monotonic() + 30
        while ours is None and time.monotonic() < deadline:
            try:
                line = tracer.stdout.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert line is not None, f"lab3 exited early; stderr: {tracer.stderr_lines}"
            event = json.loads(line)
            events.append(event)
            if event["filename"] == str(probe):
                ours = event
        assert ours is not None, f"no event for {probe} among {len(events)} events: {events[-5:]}"
        assert ours == {"pid": child.pid, "ppid": os.getpid(), "uid": os.getuid(),
                        "comm": probe.name[:15], "filename": str(probe)}

        # -count: the tracer stops by itself after exactly COUNT events.
        for _ in range(COUNT):
            if tracer.proc.poll() is not None:
                break
            subprocess.run(["true"], check=True)
        tracer.proc.wait(timeout=30)
        lines = len(events)
        while (line := tracer.stdout.get(timeout=10)) is not None:
            json.loads(line)
            lines += 1
        assert tracer.proc.returncode == 0, tracer.stderr_lines
        assert lines == COUNT
    finally:
        tracer.kill()


def test_generation_warns_about_fentry(main_build: lab3build.Build) -> None:
    warnings = [line for line in main_build.log.splitlines()
                if "warning" in line and "fentry/security_bprm_check" in line]
    assert warnings and all("own BTF" in line for line in warnings), main_build.log


def test_native_btf_by_default_and_ctrl_c(main_build: lab3build.Build, tracefs: None) -> None:
    tracer = Tracer(main_build.binary, "-json")
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert "btf: kernel" in stderr
        assert not any("skipped" in line for line in stderr), stderr
        tracer.proc.send_signal(signal.SIGINT)
        assert tracer.proc.wait(timeout=30) == 0, tracer.stderr_lines
        tracer.stderr_until("interrupted", timeout=10)
    finally:
        tracer.kill()


def test_timeout(main_build: lab3build.Build, tracefs: None) -> None:
    start = time.monotonic()
    proc = subprocess.run([str(main_build.binary), "-json", "-timeout", "1s"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "lab3: timeout after" in proc.stderr
    assert time.monotonic() - start < 30


def test_plain_make_embeds_this_kernel(tmp_path_factory: pytest.TempPathFactory,
                                      tracefs: None) -> None:
    """`make` with no BTFHUB_ARCHIVE: an archive of this host's kernel, made on the spot."""
    build = lab3build.build("default", tmp_path_factory)
    assert list(build.archive.glob("*/*/*/*.btf.tar.xz")) == \
        [build.archive / f"{lab3build.host_key()}.btf.tar.xz"]
    tracer = Tracer(build.binary, "-embedded-btf", "-json")
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: embedded {lab3build.host_key()}" in stderr, stderr
        tracer.proc.send_signal(signal.SIGINT)
        assert tracer.proc.wait(timeout=30) == 0, tracer.stderr_lines
    finally:
        tracer.kill()


def test_payload_without_this_kernel_fails_clearly(
        tmp_path_factory: pytest.TempPathFactory, tracefs: None) -> None:
    build = lab3build.build("missing", tmp_path_factory)
    proc = subprocess.run([str(build.binary), "-embedded-btf", "-json", "-count", "1",
                           "-timeout", "30s"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stderr
    assert "btf: embedded" not in proc.stderr
    assert "tracing execve" not in proc.stderr
    # The runtime's error names the kernel and the key it looked for.
    assert "no embedded BTF" in proc.stderr, proc.stderr
    assert lab3build.host_key() in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_make_is_incremental(main_build: lab3build.Build, tmp_path: Path) -> None:
    """A second `make` finds the embedded BTF up to date (through the emitted Makefile.btfgen);
    a changed BPF source, another archive or another ARCH makes it stale."""
    assert (main_build.dir / "Makefile.btfgen").is_file()
    archive = f"BTFHUB_ARCHIVE={main_build.archive}"

    def up_to_date(build: Path, *args: str) -> bool:
        query = ["make", "-q", archive, *args, "btfgen_manifest.json"]
        code = subprocess.run(query, cwd=build, env=main_build.env).returncode
        assert code in (0, 1), f"make -q exited {code}"
        return code == 0

    assert up_to_date(main_build.dir)

    def copy(name: str) -> Path:
        return Path(shutil.copytree(main_build.dir, tmp_path / name, symlinks=True))

    edited = copy("edited")
    # Now is later than the generation a moment ago: the source is newer than the objects.
    os.utime(edited / "execsnoop.bpf.c")
    assert not up_to_date(edited)
    # An older archive directory (a checkout made before this build) is still a change.
    older = tmp_path / "older-archive"
    shutil.copytree(main_build.archive, older)
    os.utime(older, (0, 0))
    assert not up_to_date(copy("archive"), f"BTFHUB_ARCHIVE={older}")
    assert not up_to_date(copy("arch"), "ARCH=x86_64,arm64")


def test_go_generate_builds(main_build: lab3build.Build, tmp_path: Path) -> None:
    """`go generate` then `go build` make the same binary as `make` (BTFHUB_ARCHIVE from the
    environment, as a user would set it)."""
    src = lab3build.copy_lab3(tmp_path / "lab3")
    env = {**main_build.env, "BTFHUB_ARCHIVE": str(main_build.archive)}
    lab3build.run(["go", "generate"], cwd=src, env=env)
    for name in ("vmlinux.h", "execsnoop_x86_bpfel.o", "execsnoop_arm64_bpfel.o", "btfgen.go",
                 "btfgen_x86_64.payload", "Makefile.btfgen"):
        assert (src / name).is_file(), name
    assert (src / "btfgen_x86_64.payload").read_bytes() == \
        (main_build.dir / "btfgen_x86_64.payload").read_bytes()
    lab3build.run(["go", "build", "-o", "lab3", "."], cwd=src, env=env)
