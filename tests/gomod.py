"""Temporary Go modules for tests: build and run generated code against a real cilium/ebpf.

Uses the default module cache (GOMODCACHE), so every test and every run after the first
downloads nothing. Tests skip, with the reason, when the go toolchain is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

NEWEST_EBPF = "v0.22.0"
OLDEST_EBPF = "v0.12.3"
GO_CANDIDATES = ("go", "/usr/local/go/bin/go")


def find_go() -> str | None:
    """The go binary, or None (tests then skip: install Go or put it on PATH)."""
    for cand in GO_CANDIDATES:
        found = shutil.which(cand)
        if found:
            return found
    return None


def go_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # -mod=mod lets go resolve the one requirement we write by hand; GOTOOLCHAIN=local keeps
    # a newer `go` line in a dependency from downloading another toolchain; GOFLAGS from the
    # caller's shell must not change what the tests see.
    env.update({"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"})
    env.update(extra or {})
    return env


def run_go(args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
           timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `go args...` in cwd; on failure raise AssertionError with the command and output."""
    go = find_go()
    if go is None:
        raise RuntimeError("go not found")
    proc = subprocess.run([go, *args], cwd=cwd, env=go_env(env), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"go {' '.join(args)} (in {cwd}) exited {proc.returncode}:\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def make_module(dest: Path, *, ebpf_version: str = NEWEST_EBPF,
                module: str = "example.com/btfgentest",
                files: Mapping[str, str | bytes] | None = None,
                copy: Iterable[Path] = ()) -> Path:
    """Create a Go module in dest that requires github.com/cilium/ebpf at ebpf_version.

    files maps relative paths to contents; copy lists files to copy in (keeping their names).
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "go.mod").write_text(f"module {module}\n\ngo 1.21\n")
    for name, content in (files or {}).items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for src in copy:
        shutil.copyfile(src, dest / src.name)
    run_go(["get", f"github.com/cilium/ebpf@{ebpf_version}"], cwd=dest)
    return dest
