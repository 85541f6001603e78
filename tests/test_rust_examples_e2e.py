"""examples/aya and examples/libbpf-rs end to end, on the real kernel: `make` builds each Rust
tracer (clang builds lab3's execsnoop.bpf.c, gobtfgen generate --lang rust, cargo) with BTF
embedded for this host's kernel; told to ignore the kernel's own BTF, it loads with the embedded
BTF (aya: parsed into aya::Btf; libbpf-rs: a private file for btf_custom_path, removed once
loaded) and reports a process this test starts with the right pid, ppid, uid, comm and
filename, as the Go and C examples do. Built against an archive without this kernel, it fails
with the runtime's clear error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import cargo, lab3build
from tests.tracer import Tracer, probe, tracefs

__all__ = ["probe", "tracefs"]  # fixtures

pytestmark = [pytest.mark.tools, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("aya", "libbpf-rs")
GENERATED = ("target", "execsnoop", "execsnoop.bpf.o", "vmlinux.h*", "btfgen.rs",
             "btfgen_*.payload", "btfgen_manifest.json", "btfgen_kernels.txt", "Makefile.btfgen",
             "Makefile.btfgen.args", ".btfhub-host")
COUNT = 200  # large enough that other processes exec'ing meanwhile cannot crowd us out


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="the Rust examples load BPF programs into the kernel: run the tests "
                           "as root")
    lab3build.host_arch()
    if not lab3build.VMLINUX.is_file():
        pytest.skip(reason=f"{lab3build.VMLINUX} is absent: the example's vmlinux.h and this "
                           "host's archive entry come from it")
    for tool in ("clang", "bpftool", "make"):
        lab3build.need_tool(tool)
    cargo.find_cargo()


def _build(tmp: Path, example: str, name: str, *, host: bool) -> Path:
    _require_tools()
    env = {**lab3build.tool_env(tmp / "cache"), **{k: v for k, v in cargo.env().items()
                                                   if k in ("PATH", "CARGO_TARGET_DIR")}}
    archive = tmp / f"archive-{name}"
    archive.mkdir()
    if host:
        lab3build.add_host_kernel(archive, env)
    else:
        # A kernel that cannot be this one.
        lab3build.add_host_kernel(archive, env, "--id", "decoy", "--version", "1",
                                  "--release", "0.0.0-not-this-kernel")
    dest = tmp / f"build-{name}"
    shutil.copytree(REPO / "examples" / example, dest,
                    ignore=shutil.ignore_patterns(*GENERATED))
    log = lab3build.run(["nice", "-n", "10", "make", "--no-print-directory",
                         f"GOBTFGEN={' '.join(lab3build.gobtfgen_command())}",
                         f"BTFHUB_ARCHIVE={archive}", f"LAB3={REPO / 'examples' / 'lab3'}"],
                        cwd=dest, env=env, timeout=1800)
    assert (dest / "execsnoop").is_file(), log
    # The generated module compiles warning-free inside the example: rustc's warnings start
    # their line (gobtfgen's own fentry warning is expected, and a dependency's build script
    # may speak as "warning: <crate>@<version>: ...").
    assert not [line for line in log.splitlines() if line.startswith("warning")
                and not re.match(r"warning: [\w-]+@", line)], log
    return dest


@pytest.fixture(scope="module", params=EXAMPLES)
def main_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp(f"{request.param}-example"), request.param, "main",
                  host=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BTFGEN_BTF_FILE", "HOST_ROOT")}
    env.update(extra)
    return env


def test_embedded_btf_reports_known_process(main_build: Path, tracefs: None, probe: Path,
                                            tmp_path: Path) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    tracer = Tracer(main_build / "execsnoop", "--embedded-btf", "--json", "--count", str(COUNT),
                    "--timeout", "90s", env=_env(TMPDIR=str(private_tmp)))
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: embedded {lab3build.host_key()}" in stderr, stderr
        # libbpf-rs read the BTF from a private temporary file, removed once loaded (aya
        # parses it from memory and writes none).
        assert list(private_tmp.iterdir()) == []
        child = subprocess.Popen([str(probe)])
        child.wait(timeout=30)
        event = tracer.event_for(str(probe), timeout=30)
        assert event == {"pid": child.pid, "ppid": os.getpid(), "uid": os.getuid(),
                         "comm": probe.name[:15], "filename": str(probe)}
    finally:
        tracer.kill()


def test_override_and_native(main_build: Path, tracefs: None, probe: Path) -> None:
    tracer = Tracer(main_build / "execsnoop", "-json", "-count", str(COUNT), "-timeout=60s",
                    env=_env(BTFGEN_BTF_FILE=str(lab3build.VMLINUX)))
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: override {lab3build.VMLINUX}" in stderr, stderr
        child = subprocess.Popen([str(probe)])
        child.wait(timeout=30)
        assert tracer.event_for(str(probe), timeout=30)["pid"] == child.pid
    finally:
        tracer.kill()
    proc = subprocess.run([str(main_build / "execsnoop"), "--json", "--timeout", "1s"],
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "btf: kernel" in proc.stderr and "timeout after" in proc.stderr


def test_bad_flags_are_usage_errors(main_build: Path) -> None:
    proc = subprocess.run([str(main_build / "execsnoop"), "--count", "many"], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert 'invalid value "many" for flag -count' in proc.stderr and "Usage:" in proc.stderr


@pytest.mark.parametrize("example", EXAMPLES)
def test_no_matching_kernel_fails_clearly(example: str, tmp_path_factory: pytest.TempPathFactory,
                                          tracefs: None) -> None:
    build = _build(tmp_path_factory.mktemp(f"{example}-example-missing"), example, "missing",
                   host=False)
    proc = subprocess.run([str(build / "execsnoop"), "--embedded-btf", "--json", "--count", "1",
                           "--timeout", "30s"], capture_output=True, text=True, timeout=60,
                          env=_env())
    assert proc.returncode == 1, proc.stderr
    assert "tracing execve" not in proc.stderr and "btf: embedded" not in proc.stderr
    key = lab3build.host_key()
    distro, version, arch, release = key.split("/")
    manifest = json.loads((build / "btfgen_manifest.json").read_text())
    carried = manifest["payload"][arch]["kernels"]
    assert proc.stderr.startswith("execsnoop: btf: no embedded BTF for "), proc.stderr
    for part in (distro, arch, release, key, f"all {carried} {arch} kernels",
                 "gobtfgen archive add", "BTFGEN_BTF_FILE"):
        assert part in proc.stderr, (part, proc.stderr)


def test_example_is_rustfmt_and_clippy_clean(main_build: Path) -> None:
    rustfmt = shutil.which("rustfmt", path=cargo.env()["PATH"])
    if rustfmt is None:
        pytest.skip(reason="rustfmt is missing; rustup component add rustfmt")
    # The generated btfgen.rs comes along (main.rs includes it): both as committed/generated.
    proc = subprocess.run([rustfmt, "--edition", "2021", "--check", "src/main.rs"],
                          cwd=main_build, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]
    clippy = cargo.cargo(main_build, "clippy", "--release", "--", "-D", "warnings")
    assert "warning:" not in clippy.stderr, clippy.stderr
