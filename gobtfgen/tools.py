"""The one place that runs external programs (bpftool, git, go, clang).

Every call resolves the binary first, prints the command shell-quoted when verbose, and turns a
failure into a ToolError carrying the command, the exit code, the tail of stderr and advice.

It uses subprocess rather than the `sh` package first planned: measured here, sh added 6-8 ms of
wall time and ~3 ms of CPU to every call (it forks a Python child and pumps output through
threads), about 40% of a bpftool min_core_btf run, which gobtfgen makes once per kernel.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gobtfgen.errors import ToolError

VERBOSE = False

# How to get each tool, for the "not found" advice.
_INSTALL_ADVICE = {
    "bpftool": "install it (Debian/Ubuntu: apt-get install bpftool) or pass --bpftool PATH",
    "git": "install git (Debian/Ubuntu: apt-get install git)",
    "go": "install Go from the distribution or go.dev",
    "clang": "install clang (Debian/Ubuntu: apt-get install clang llvm)",
    "ld": "install binutils (Debian/Ubuntu: apt-get install binutils) or pass --ld PATH",
}


class ToolKilled(ToolError):
    """The program died from a signal (Ctrl-C, OOM killer): not a verdict on its input."""


@dataclass(frozen=True, kw_only=True)
class Result:
    stdout: str
    stderr: str


def resolve(name_or_path: str, *, tool: str | None = None) -> str:
    """Return an executable path for a tool name or path, or raise a ToolError with advice."""
    tool = tool or Path(name_or_path).name
    if os.sep in name_or_path:
        if os.path.isfile(name_or_path) and os.access(name_or_path, os.X_OK):
            return name_or_path
        raise ToolError(f"{tool}: {name_or_path} is not an executable file; "
                        f"{_INSTALL_ADVICE.get(tool, 'check the path')}")
    found = shutil.which(name_or_path)
    if not found:
        raise ToolError(f"{tool} not found on PATH; {_INSTALL_ADVICE.get(tool, 'install it')}")
    return found


def run(argv: Sequence[str], *, cwd: str | Path | None = None, tool: str | None = None,
        env: dict[str, str] | None = None, timeout: float | None = None) -> Result:
    """Run a command to completion and return its output; raise ToolError on failure."""
    stdout, stderr = _run(argv, cwd=cwd, tool=tool, env=env, timeout=timeout)
    return Result(stdout=stdout.decode("utf-8", "replace"), stderr=stderr)


def run_bytes(argv: Sequence[str], *, tool: str | None = None) -> bytes:
    """run() for a program whose standard output is binary data."""
    return _run(argv, cwd=None, tool=tool, env=None, timeout=None)[0]


def _run(argv: Sequence[str], *, cwd: str | Path | None, tool: str | None,
         env: dict[str, str] | None, timeout: float | None) -> tuple[bytes, str]:
    exe = resolve(argv[0], tool=tool)
    tool = tool or Path(argv[0]).name
    cmd = [exe, *argv[1:]]
    if VERBOSE:
        print("+ " + shlex.join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{shlex.join(cmd)} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise ToolError(f"cannot run {exe}: {exc.strerror}; "
                        f"{_INSTALL_ADVICE.get(tool, 'check the path')}") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ToolKilled(f"{shlex.join(cmd)} was killed by {name}")
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:])
        raise ToolError(f"{shlex.join(cmd)} exited {proc.returncode}: "
                        f"{tail or '(no output on stderr)'}")
    return proc.stdout, stderr


# bpftool gen min_core_btf first shipped with the bpftool of Linux 5.18; bpftool then moved to its
# own version scheme starting at v7.0.0 (2022), which includes it.
MIN_BPFTOOL = (7, 0, 0)


def bpftool_version(bpftool: str) -> tuple[str, tuple[int, int, int]]:
    """Return (resolved path, version) of a bpftool that supports gen min_core_btf."""
    exe = resolve(bpftool, tool="bpftool")  # every time: PATH may have changed
    return exe, _bpftool_version_of(exe)


@cache
def _bpftool_version_of(exe: str) -> tuple[int, int, int]:
    out = run([exe, "version"], tool="bpftool").stdout
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ToolError(f"bpftool: cannot read a version from `{exe} version` "
                        f"(got {out.strip()[:80]!r}); install bpftool >= 7.0 or pass --bpftool")
    version = (int(match[1]), int(match[2]), int(match[3]))
    # Versions below 7 are kernel-versioned (v5.x, v6.x): min_core_btf arrived in v5.18.
    ok = version >= MIN_BPFTOOL or (version[0] in (5, 6) and version >= (5, 18, 0))
    if not ok:
        raise ToolError(f"bpftool {'.'.join(map(str, version))} at {exe} is too old: "
                        "gen min_core_btf needs bpftool >= 7.0 (or the one of Linux >= 5.18); "
                        "upgrade it (Debian 12: apt-get install bpftool) or pass --bpftool")
    return version


def bpftool_min_core_btf(bpftool: str, source: Path, objects: Sequence[Path]) -> bytes:
    """The minimized BTF, which bpftool writes to /dev/stdout (a pipe to us): measured here,
    ~1.5 ms a kernel less than a temporary output file."""
    exe, _ = bpftool_version(bpftool)
    return run_bytes([exe, "gen", "min_core_btf", str(source), "/dev/stdout",
                      *map(str, objects)], tool="bpftool")


# ---- git and ld (gobtfgen fetch, generate --format ld) ---------------------------------------

def run_progress(argv: Sequence[str], *, cwd: str | Path | None = None, tool: str | None = None,
                 env: dict[str, str] | None = None, show: bool = False) -> Result:
    """run(), but with the program's stderr shown as it comes when show is set: a clone of
    btfhub-archive takes minutes, and git's own progress lines are the best progress there is.

    stderr is still collected, so a failure carries its tail as run()'s does.
    """
    exe = resolve(argv[0], tool=tool)
    tool = tool or Path(argv[0]).name
    cmd = [exe, *argv[1:]]
    if VERBOSE:
        print("+ " + shlex.join(cmd), file=sys.stderr)
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ToolError(f"cannot run {exe}: {exc.strerror}; "
                        f"{_INSTALL_ADVICE.get(tool, 'check the path')}") from None
    err = bytearray()
    try:
        assert proc.stderr is not None and proc.stdout is not None
        while True:
            block = os.read(proc.stderr.fileno(), 4096)
            if not block:
                break
            err += block
            if show:
                sys.stderr.write(block.decode("utf-8", "replace"))
                sys.stderr.flush()
        out = proc.stdout.read()
        returncode = proc.wait()
    except BaseException:
        # Ctrl-C: the child got the signal too (same process group); make sure it is gone
        # before the caller cleans up behind it.
        proc.kill()
        proc.wait()
        raise
    stderr = err.decode("utf-8", "replace")
    if returncode < 0:
        raise ToolKilled(f"{shlex.join(cmd)} was killed by {signal.Signals(-returncode).name}")
    if returncode != 0:
        lines = [part.strip() for line in stderr.strip().splitlines()
                 for part in line.split("\r") if part.strip()]
        raise ToolError(f"{shlex.join(cmd)} exited {returncode}: "
                        f"{' | '.join(lines[-3:]) or '(no output on stderr)'}")
    return Result(stdout=out.decode("utf-8", "replace"), stderr=stderr)


def git(args: Sequence[str], *, git: str = "git", cwd: str | Path | None = None,
        progress: bool = False) -> Result:
    """Run git with no prompt for credentials (a fetch in CI must fail, not hang) and English
    messages (errors are matched and quoted). The user's git config stays in force: proxies,
    CA bundles and insteadOf mirrors are how many networks reach GitHub at all."""
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    return run_progress([git, *args], cwd=cwd, tool="git", env=env, show=progress)


def ld_binary(ld: str, source: Path, output: Path) -> None:
    """`ld -r -b binary`: an object whose _binary_<name>_start/_end symbols bracket the bytes
    of source, as bcc's libbpf-tools link min_core_btfs.tar.gz. Run in source's directory so
    the symbol names come from the bare file name."""
    run([ld, "-r", "-b", "binary", source.name, "-o", str(output.resolve())],
        cwd=source.parent, tool="ld")
