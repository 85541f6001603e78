"""Makefile.btfgen, run by the real make: up to date after a generation, rebuilt when an object
or the archive changes, and the go:generate line printed by generate works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, need

pytestmark = pytest.mark.tools


def test_makefile_fragment_tracks_objects_and_archive(tmp_path: Path, real_archive: Path,
                                                      probe_objects: dict[str, Path]) -> None:
    make, bpftool = need("make"), need("bpftool")
    archive = tmp_path / "archive"
    for src in sorted((real_archive / "debian" / "12" / "x86_64").glob("6.1.0-56-*"))[:2]:
        dest = archive / "debian" / "12" / "x86_64" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(probe_objects["base"], pkg / "probe_x86_bpfel.o")
    (pkg / "Makefile").write_text("include Makefile.btfgen\n\nall: btfgen\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "GOBTFGEN_CACHE_DIR": str(tmp_path / "cache"),
           "BPFTOOL": bpftool}
    gobtfgen = f"{sys.executable} -m gobtfgen"
    first = subprocess.run([*gobtfgen.split(), "generate", "--archive", str(archive), "--arch",
                            "x86_64", "--pkg", "main"], cwd=pkg, env=env, capture_output=True,
                           text=True)
    assert first.returncode == 0, first.stderr
    # The line to paste (printed at a terminal, always in the manifest).
    manifest = json.loads((pkg / "btfgen_manifest.json").read_text())
    assert manifest["go_generate"].startswith("//go:generate gobtfgen generate --archive ")

    def up_to_date() -> bool:
        return subprocess.run([make, "-q", "GOBTFGEN=" + gobtfgen], cwd=pkg,
                              env=env).returncode == 0

    def run_make() -> str:
        done = subprocess.run([make, "GOBTFGEN=" + gobtfgen], cwd=pkg, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert up_to_date()  # and the arguments of this make are recorded as the outputs'
    assert (pkg / "Makefile.btfgen.args").is_file()
    time.sleep(0.01)
    (pkg / "probe_x86_bpfel.o").touch()
    assert not up_to_date()
    run_make()
    assert up_to_date()
    # A new kernel in the archive triggers a rebuild that embeds it.
    extra = sorted((real_archive / "debian" / "12" / "x86_64").glob("6.1.0-47-*"))[0]
    shutil.copy(extra, archive / "debian" / "12" / "x86_64" / extra.name)
    assert not up_to_date()
    out = run_make()
    assert "1 minimized, 2 from cache" in out
    assert extra.name.removesuffix(".btf.tar.xz") in (pkg / "btfgen_kernels.txt").read_text()
    assert up_to_date()

    # Other arguments regenerate though no file got newer: another ARCH, an archive older than
    # the outputs (checked out before the last build), other flags.
    def up_to_date_with(*args: str) -> bool:
        return subprocess.run([make, "-q", "GOBTFGEN=" + gobtfgen, *args], cwd=pkg,
                              env=env).returncode == 0

    assert not up_to_date_with("ARCH=arm64")
    old = tmp_path / "old-archive"
    shutil.copytree(archive, old)
    for path in old.rglob("*"):
        os.utime(path, (1, 1))  # from long before the last generation
    assert not up_to_date_with(f"BTFHUB_ARCHIVE={old}")
    done = subprocess.run([make, "GOBTFGEN=" + gobtfgen, f"BTFHUB_ARCHIVE={old}"], cwd=pkg,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((pkg / "btfgen_manifest.json").read_text())["archive"]["path"] == str(old)
    assert up_to_date_with(f"BTFHUB_ARCHIVE={old}")
    assert up_to_date()  # the fragment now defaults to the archive of the last generation
    assert not up_to_date_with("BTFGEN_FLAGS=--exclude '*cloud*'")
