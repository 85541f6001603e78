"""examples/libbpf end to end, on the real kernel: `make` builds the C tracer (clang, bpftool gen
skeleton, gobtfgen generate --lang c, cc) with BTF embedded for this host's kernel plus the
sample archive; told to ignore the kernel's own BTF, it loads with the embedded BTF and reports
a process this test starts with the right pid, ppid, uid, comm and filename, as the Go example
does. Built against an archive without this kernel, it fails with the runtime's clear error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import lab3build
from tests.tracer import Tracer, probe, tracefs

__all__ = ["probe", "tracefs"]  # fixtures

pytestmark = [pytest.mark.tools, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "libbpf"
GENERATED = ("execsnoop", "execsnoop.bpf.o", "execsnoop.skel.h*", "vmlinux.h*", "btfgen.c",
             "btfgen.h", "btfgen_payload_*.h", "btfgen_manifest.json", "btfgen_kernels.txt",
             "Makefile.btfgen", ".btfhub-host", "Makefile.btfgen.args")
COUNT = 200  # large enough that other processes exec'ing meanwhile cannot crowd us out


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="the C example loads BPF programs into the kernel: run the tests as "
                           "root")
    lab3build.host_arch()
    if not lab3build.VMLINUX.is_file():
        pytest.skip(reason=f"{lab3build.VMLINUX} is absent: the example's vmlinux.h and this "
                           f"host's "
                    "archive entry come from it")
    for tool in ("clang", "bpftool", "make", "cc"):
        lab3build.need_tool(tool)
    for header in ("/usr/include/bpf/libbpf.h", "/usr/include/zlib.h",
                   "/usr/include/libelf.h"):
        if not Path(header).is_file():
            pytest.skip(reason=f"{header} is missing; apt-get install libbpf-dev libelf-dev "
                        "zlib1g-dev")


def _build(tmp: Path, name: str, *, host: bool) -> Path:
    _require_tools()
    env = lab3build.tool_env(tmp / "cache")
    archive = tmp / f"archive-{name}"
    lab3build.make_archive(archive, env, host=host, real=True)
    if not host and not any(archive.glob(f"*/*/{lab3build.host_arch()}/*.btf.tar.xz")):
        # No sample: a kernel that cannot be this one.
        lab3build.add_host_kernel(archive, env, "--id", "decoy", "--version", "1",
                                  "--release", "0.0.0-not-this-kernel")
    dest = tmp / f"build-{name}"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(*GENERATED))
    log = lab3build.run(["make", "--no-print-directory",
                         f"GOBTFGEN={' '.join(lab3build.gobtfgen_command())}",
                         f"BTFHUB_ARCHIVE={archive}"], cwd=dest, env=env, timeout=600)
    assert (dest / "execsnoop").is_file(), log
    # The generated C compiles warning-free under the example's -Wall -Wextra.
    assert "warning:" not in log, log
    return dest


@pytest.fixture(scope="module")
def main_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("c-example"), "main", host=True)


def test_embedded_btf_reports_known_process(main_build: Path, tracefs: None, probe: Path,
                                            tmp_path: Path) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    env.pop("BTFGEN_BTF_FILE", None)
    tracer = Tracer(main_build / "execsnoop", "--embedded-btf", "--json", "--count", str(COUNT),
                    "--timeout", "90", env=env)
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: embedded {lab3build.host_key()}" in stderr, stderr
        # The BTF went through a private temporary file, removed once libbpf had loaded it.
        assert list(private_tmp.iterdir()) == []
        child = subprocess.Popen([str(probe)])
        child.wait(timeout=30)
        event = tracer.event_for(str(probe), timeout=30)
        assert event == {"pid": child.pid, "ppid": os.getpid(), "uid": os.getuid(),
                         "comm": probe.name[:15], "filename": str(probe)}
    finally:
        tracer.kill()


def test_override_and_native(main_build: Path, tracefs: None, probe: Path) -> None:
    env = {**os.environ, "BTFGEN_BTF_FILE": str(lab3build.VMLINUX)}
    tracer = Tracer(main_build / "execsnoop", "--json", "--count", str(COUNT), "--timeout", "60",
                    env=env)
    try:
        stderr = tracer.stderr_until("tracing execve", timeout=60)
        assert f"btf: override {lab3build.VMLINUX}" in stderr, stderr
        child = subprocess.Popen([str(probe)])
        child.wait(timeout=30)
        assert tracer.event_for(str(probe), timeout=30)["pid"] == child.pid
    finally:
        tracer.kill()
    env.pop("BTFGEN_BTF_FILE")
    proc = subprocess.run([str(main_build / "execsnoop"), "--json", "--timeout", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "btf: kernel" in proc.stderr and "timeout after" in proc.stderr


def test_no_matching_kernel_fails_clearly(tmp_path_factory: pytest.TempPathFactory,
                                          tracefs: None) -> None:
    build = _build(tmp_path_factory.mktemp("c-example-missing"), "missing", host=False)
    env = {k: v for k, v in os.environ.items() if k != "BTFGEN_BTF_FILE"}
    proc = subprocess.run([str(build / "execsnoop"), "--embedded-btf", "--json", "--count", "1",
                           "--timeout", "30"], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 1, proc.stderr
    assert "tracing execve" not in proc.stderr and "btf: embedded" not in proc.stderr
    key = lab3build.host_key()
    distro, version, arch, release = key.split("/")
    manifest = json.loads((build / "btfgen_manifest.json").read_text())
    carried = manifest["payload"][arch]["kernels"]
    assert proc.stderr.startswith("btfgen: no embedded BTF for "), proc.stderr
    for part in (distro, arch, release, key, f"all {carried} {arch} kernels",
                 "gobtfgen archive add", "BTFGEN_BTF_FILE"):
        assert part in proc.stderr, (part, proc.stderr)
