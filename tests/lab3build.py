"""Builds examples/lab3 for real (clang, bpf2go, bpftool, gobtfgen, go) for the end-to-end and
equivalence tests. Each build runs once per test session: both test modules ask for the same
builds, and the results are memoized here."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gobtfgen import keys
from tests import realkernels

REPO = Path(__file__).resolve().parents[1]
LAB3 = REPO / "examples" / "lab3"
EQUIV = Path(__file__).resolve().parent / "equiv"
VMLINUX = Path("/sys/kernel/btf/vmlinux")

# What `make` and `go generate` produce in examples/lab3 (its .gitignore): never copied from a
# developer's checkout into a test build.
GENERATED = ("lab3", "vmlinux.h", "vmlinux.h.tmp", "execsnoop_*_bpfel.o", "execsnoop_*_bpfel.go",
             "btfgen*.go", "btfgen_*.payload", "btfgen_manifest.json", "btfgen_kernels.txt",
             "Makefile.btfgen", ".btfhub-host", "Makefile.btfgen.args")
# btfhub arch -> bpf2go's name for it in object file names.
BPF2GO_ARCH = {"x86_64": "x86", "arm64": "arm64"}


def host_arch() -> str:
    """This machine's btfhub arch (x86_64, arm64); the tests skip on any other."""
    arch = keys.btfhub_arch(platform.machine())
    if arch not in BPF2GO_ARCH:
        pytest.skip(reason=f"lab3 targets x86_64 and arm64; this machine is {platform.machine()}")
    return arch


@dataclass(frozen=True, kw_only=True)
class Build:
    dir: Path  # the built copy of examples/lab3, ./lab3 in it
    archive: Path  # the archive it embedded
    env: dict[str, str]  # the environment it was built in (tool_env)
    log: str  # what make printed

    @property
    def binary(self) -> Path:
        return self.dir / "lab3"

    @property
    def host_object(self) -> Path:
        """The BPF object for this machine's arch."""
        return self.dir / f"execsnoop_{BPF2GO_ARCH[host_arch()]}_bpfel.o"


_builds: dict[str, Build] = {}


def need_tool(name: str) -> str:
    path = shutil.which(name)
    for fallback in (f"/usr/sbin/{name}", f"/usr/local/go/bin/{name}"):
        if not path and Path(fallback).is_file():
            path = fallback
    if not path:
        pytest.skip(reason=f"{name} is not installed; lab3 needs clang, bpftool, go and make "
                    "(scripts/setup installs them)")
    return path


def require_lab3_tools() -> None:
    """Skip unless this machine can build lab3 and load its programs into the kernel."""
    if os.geteuid() != 0:
        pytest.skip(reason="lab3 tests load BPF programs into the kernel: run them as root")
    host_arch()
    if not VMLINUX.is_file():
        pytest.skip(reason=f"{VMLINUX} is absent: lab3's vmlinux.h and this host's archive "
                           f"entry come "
                    "from it")
    for tool in ("clang", "bpftool", "go", "make"):
        need_tool(tool)
    if not Path("/usr/include/bpf/bpf_helpers.h").is_file():
        pytest.skip(reason="libbpf headers are missing; apt-get install libbpf-dev (scripts/setup)")


def tool_env(cache: Path) -> dict[str, str]:
    """The environment every build runs in: this checkout's gobtfgen and a private cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["GOBTFGEN_CACHE_DIR"] = str(cache)
    # The Makefile's (and Makefile.btfgen's) GOBTFGEN ?= gobtfgen takes it from the environment.
    env["GOBTFGEN"] = " ".join(gobtfgen_command())
    env.pop("BTFHUB_ARCHIVE", None)
    # A go line newer than this toolchain fails clearly instead of downloading another one.
    env["GOTOOLCHAIN"] = "local"
    if not shutil.which("go") and Path("/usr/local/go/bin/go").exists():
        env["PATH"] = f"/usr/local/go/bin{os.pathsep}{env.get('PATH', '')}"
    return env


def gobtfgen_command() -> list[str]:
    return [sys.executable, "-m", "gobtfgen"]


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run a build step; on failure the assertion carries the command and its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} (in {cwd}) exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-6000:]}"
    return proc.stdout


def host_key() -> str:
    """The key this host's kernel has in an archive: <id>/<version>/<arch>/<release>."""
    for path in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        if path.is_file():
            osr = keys.OSRelease.parse(path.read_text())
            break
    else:
        pytest.skip(reason="no /etc/os-release: cannot name this host's kernel in an archive; "
                           "run on a host with an os-release file")
    # btfhub cuts VERSION_ID to the major number, except for SLES.
    version = osr.version_id if osr.id == "sles" else osr.version_id.split(".", 1)[0]
    assert osr.id and version
    return keys.format_key(osr.id, version, host_arch(), platform.release())


def add_host_kernel(archive: Path, env: dict[str, str], *extra: str) -> None:
    """`gobtfgen archive add`: this host's kernel BTF into the archive, under this host's key
    unless extra flags (--id, --version, --release) say otherwise."""
    run([*gobtfgen_command(), "archive", "add", str(archive), "--from", str(VMLINUX), *extra],
        cwd=archive, env=env)


def make_archive(root: Path, env: dict[str, str], *, host: bool, real: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if real and realkernels.KERNELS:
        realkernels.archive(root)
    if host:
        add_host_kernel(root, env)
    return root


def copy_lab3(dest: Path) -> Path:
    shutil.copytree(LAB3, dest, ignore=shutil.ignore_patterns(*GENERATED))
    return dest


def make_lab3(dest: Path, env: dict[str, str], archive: Path | None) -> str:
    """`make` in a fresh copy of examples/lab3 at dest; returns make's output."""
    copy_lab3(dest)
    args = ["make", "--no-print-directory"]
    if archive is not None:
        args.append(f"BTFHUB_ARCHIVE={archive}")
    log = run(args, cwd=dest, env=env, timeout=600)
    assert (dest / "lab3").is_file(), f"make finished without building ./lab3:\n{log}"
    return log


def build(name: str, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The lab3 build called name, made once per session:

    main     archive = this host's kernel + every real kernel (tests/realkernels.py)
    missing  archive without this host's kernel (the real kernels, or a decoy kernel)
    default  no BTFHUB_ARCHIVE: the Makefile makes an archive of this host's kernel
    """
    if name in _builds:
        return _builds[name]
    require_lab3_tools()
    base = tmp_path_factory.getbasetemp() / "lab3"
    base.mkdir(exist_ok=True)
    env = tool_env(base / "cache")
    dest = base / f"build-{name}"
    archive: Path | None
    if name == "main":
        archive = make_archive(base / "archive-main", env, host=True, real=True)
    elif name == "missing":
        archive = make_archive(base / "archive-missing", env, host=False, real=True)
        if not any(archive.glob(f"*/*/{host_arch()}/*.btf.tar.xz")):
            # No sample: a kernel that cannot be this one (another distro, another release).
            add_host_kernel(archive, env, "--id", "decoy", "--version", "1",
                            "--release", "0.0.0-not-this-kernel")
    elif name == "default":
        archive = None
    else:
        raise ValueError(name)
    log = make_lab3(dest, env, archive)
    _builds[name] = Build(dir=dest, archive=archive or dest / ".btfhub-host", env=env, log=log)
    return _builds[name]
