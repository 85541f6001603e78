"""examples/lab3 end to end, on the real kernel: `make` builds the tracer with BTF embedded for
this host's kernel (plus the sample archive), and the binary, told to ignore the kernel's own
BTF, reports a process this test starts with the right pid, ppid, comm and filename."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import lab3build
from tests.tracer import Tracer, probe, tracefs

__all__ = ["probe", "tracefs"]  # fixtures

pytestmark = [pytest.mark.tools, pytest.mark.slow]

COUNT = 200  # -count: large enough that other processes exec'ing meanwhile cannot crowd us out


@pytest.fixture(scope="module")
def main_build(tmp_path_factory: pytest.TempPathFactory) -> lab3build.Build:
    return lab3build.build("main", tmp_path_factory)


def test_embedded_btf_reports_known_process(main_build: lab3build.Build, tracefs: None,
                                            probe: Path) -> None:
    # The double-dash spellings the C and Rust examples share (Go's flag package takes both).
    tracer = Tracer(main_build.binary, "--embedded-btf", "--json", "--count", str(COUNT),
                    "--timeout", "90s")
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: embedded {lab3build.host_key()}" in stderr, stderr
        # fentry cannot work without the kernel's own BTF: lab3 says so and goes on.
        assert any("fentry/security_bprm_check skipped" in line for line in stderr), stderr

        # The parent is this test process; the child execs the probe by its full path.
        child = subprocess.Popen([str(probe)])
        child.wait(timeout=30)
        ours = tracer.event_for(str(probe), timeout=30)
        assert ours == {"pid": child.pid, "ppid": os.getpid(), "uid": os.getuid(),
                        "comm": probe.name[:15], "filename": str(probe)}

        # -count: the tracer stops by itself after exactly COUNT events.
        for _ in range(COUNT):
            if tracer.proc.poll() is not None:
                break
            subprocess.run(["true"], check=True)
        tracer.proc.wait(timeout=30)
        while tracer.next_event(timeout=10) is not None:
            pass
        assert tracer.proc.returncode == 0, tracer.stderr_lines
        assert len(tracer.events) == COUNT
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
    # A vmlinux.h from before this boot (a kernel upgrade since) is made again.
    rebooted = copy("rebooted")
    os.utime(rebooted / "vmlinux.h", (1, 1))
    query = ["make", "-q", archive, "vmlinux.h"]
    assert subprocess.run(query, cwd=rebooted, env=main_build.env).returncode == 1


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
