"""Building Rust test crates: one shared CARGO_TARGET_DIR under the test cache (crates built once
serve every test crate and every run), cargo under `nice`, and a skip naming what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.corpus import CACHE

TARGET_DIR = CACHE / "cargo-target"
# The miniz_oxide the generated code is tested with (it needs 0.7 or later).
MINIZ = "0.8"
AARCH64 = "aarch64-unknown-linux-gnu"


def find_cargo() -> str:
    for candidate in (shutil.which("cargo"), str(Path.home() / ".cargo" / "bin" / "cargo")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip(reason="cargo is not installed; install Rust (rustup, 1.82 or later) to run the "
                       "Rust tests")


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("BTFGEN_BTF_FILE", "HOST_ROOT")}
    out.setdefault("CARGO_TARGET_DIR", str(TARGET_DIR))
    out["CARGO_TERM_COLOR"] = "never"
    cargo_bin = str(Path(find_cargo()).parent)
    out["PATH"] = cargo_bin + os.pathsep + out.get("PATH", "")
    out.update(extra)
    return out


def target_dir() -> Path:
    """Where cargo puts what it builds: $CARGO_TARGET_DIR when set, else the shared TARGET_DIR."""
    return Path(env()["CARGO_TARGET_DIR"])


def cargo(crate: Path, *args: str, timeout: int = 1800,
          extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """cargo ARGS in crate; a failure to reach crates.io is a skip, any other failure a
    failure carrying cargo's output."""
    proc = subprocess.run(["nice", "-n", "10", find_cargo(), *args], cwd=crate,
                          capture_output=True, text=True, timeout=timeout,
                          env=env(**(extra_env or {})))
    if proc.returncode != 0 and any(s in proc.stderr for s in (
            "failed to get", "Couldn't resolve host", "failed to download",
            "network failure", "failed to query replaced source")):
        pytest.skip(reason=f"crates.io is not reachable ({proc.stderr.strip()[-300:]}); run "
                           "with network access to crates.io")
    assert proc.returncode == 0, f"cargo {' '.join(args)} in {crate}:\n{proc.stderr[-6000:]}"
    return proc


def aarch64_toolchain() -> tuple[str, str] | None:
    """(linker, qemu-aarch64) when the aarch64 Rust target, a cross linker and qemu-user are
    all here, else None."""
    try:
        targets = subprocess.run(["rustup", "target", "list", "--installed"],
                                 capture_output=True, text=True, timeout=60,
                                 env=env()).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    linker = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if AARCH64 not in targets or not linker or not qemu:
        return None
    return linker, qemu


AARCH64_MISSING = ("the aarch64 Rust target, aarch64-linux-gnu-gcc or qemu-aarch64 is missing; "
                   f"rustup target add {AARCH64} and apt-get install gcc-aarch64-linux-gnu "
                   "qemu-user (scripts/setup)")
