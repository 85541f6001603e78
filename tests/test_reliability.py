"""Faults around generate, each with the real CLI in a real process: interrupts at random points,
two runs at once, a full disk for the output and for the cache."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, need

pytestmark = pytest.mark.tools

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def contents(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def slow_bpftool(tmp_path: Path, real: str, sleep: float, started: Path | None = None) -> Path:
    """bpftool that sleeps before each `gen`; with started, it first touches that file (so a
    test can tell a run has got past its output lock and is minimizing)."""
    shim = tmp_path / "slow-bpftool"
    touch = f"touch '{started}'; " if started else ""
    shim.write_text(f"#!/bin/sh\n[ \"$1\" = gen ] && {{ {touch}sleep {sleep}; }}\n"
                    f"exec '{real}' \"$@\"\n")
    shim.chmod(0o755)
    return shim


def cmd(archive: Path, obj: Path, out: Path, cache: Path, bpftool: Path | str,
        *extra: str) -> list[str]:
    return [sys.executable, "-m", "gobtfgen", "generate", "--archive", str(archive), "--include",
            "debian/12", "--object", str(obj), "--output-dir", str(out), "--cache-dir",
            str(cache), "--bpftool", str(bpftool), "--jobs", "2", *extra]


def test_interrupts_at_random_points(tmp_path: Path, real_archive: Path,
                                     probe_objects: dict[str, Path]) -> None:
    bpftool = need("bpftool")
    shim = slow_bpftool(tmp_path, bpftool, 0.1)
    out = tmp_path / "out"
    rng = random.Random(20261121)
    outcomes = []
    for i in range(6):
        obj = probe_objects["relocs" if i % 2 else "base"]
        cache = tmp_path / f"cache{i}"  # cold each time, so the run has work to interrupt
        before = contents(out)
        proc = subprocess.Popen(cmd(real_archive, obj, out, cache, shim), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.05, 2.0))
        sig = signal.SIGINT if i % 3 else signal.SIGTERM
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        middle = contents(out)
        assert not list(cache.rglob("*.tmp")), "torn cache entry"
        assert not [n for n in middle if n.startswith(".")], "temp file left in the output"
        done = subprocess.run(cmd(real_archive, obj, out, cache, bpftool), env=ENV,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        after = contents(out)
        assert middle in (before, after), f"run {i}: output neither as before nor fully new"
        outcomes.append((sig.name, proc.returncode, "new" if middle == after else "as before"))
    # Both signals were seen, and at least one run was interrupted before it finished.
    assert {o[0] for o in outcomes} == {"SIGINT", "SIGTERM"}
    assert any(code == 130 for _, code, _ in outcomes), outcomes


def test_two_runs_at_once_serialize(tmp_path: Path, real_archive: Path,
                                    probe_objects: dict[str, Path]) -> None:
    bpftool = need("bpftool")
    # The second run starts once the first is minimizing (it holds the output lock then), and
    # each kernel takes the first 0.5 s in the slow bpftool (so the bpftool minimizer, not the
    # default built-in one), so even the 7-kernel corpus of a fresh clone keeps the first run
    # busy while the second starts up and reaches the lock.
    started = tmp_path / "first-started"
    shim = slow_bpftool(tmp_path, bpftool, 0.5, started)
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = subprocess.Popen(cmd(real_archive, probe_objects["base"], out, cache, shim,
                                 "--minimizer", "bpftool"),
                             env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the first run never called bpftool gen"
    second = subprocess.Popen(cmd(real_archive, probe_objects["relocs"], out, cache, shim,
                                  "--minimizer", "bpftool"),
                              env=ENV, stderr=subprocess.PIPE, text=True)
    _, err1 = first.communicate(timeout=300)
    _, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert "waiting for another gobtfgen run writing to" in err2
    # The second run's outputs are whole: the same as a fresh run of its inputs elsewhere.
    alone = tmp_path / "alone"
    subprocess.run(cmd(real_archive, probe_objects["relocs"], alone, cache, bpftool,
                       "--minimizer", "bpftool"), env=ENV, check=True, capture_output=True)
    got, want = contents(out), contents(alone)
    manifest = "btfgen_manifest.json"
    assert {k: v for k, v in got.items() if k not in (manifest, "Makefile.btfgen")} == \
        {k: v for k, v in want.items() if k not in (manifest, "Makefile.btfgen")}


def _tmpfs(mnt: Path, size: str) -> None:
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                                            "tmpfs", str(mnt)]).returncode:
        pytest.skip(reason="mounting a small tmpfs needs root; run the tests as root for the "
                    "full-disk checks")


def _fill(mnt: Path) -> None:
    with (mnt / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_full_output_disk_keeps_earlier_output(tmp_path: Path, real_archive: Path,
                                               probe_objects: dict[str, Path]) -> None:
    bpftool = need("bpftool")
    mnt = tmp_path / "small"
    _tmpfs(mnt, "1m")
    try:
        out, cache = mnt / "out", tmp_path / "cache"
        subprocess.run(cmd(real_archive, probe_objects["base"], out, cache, bpftool), env=ENV,
                       check=True, capture_output=True)
        before = contents(out)
        _fill(mnt)
        done = subprocess.run(cmd(real_archive, probe_objects["relocs"], out, cache, bpftool),
                              env=ENV, capture_output=True, text=True)
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("gobtfgen: error: cannot write ") and "free space" in last
        assert contents(out) == before
    finally:
        subprocess.run(["umount", str(mnt)])


def test_full_cache_disk_still_generates(tmp_path: Path, real_archive: Path,
                                         probe_objects: dict[str, Path]) -> None:
    bpftool = need("bpftool")
    mnt = tmp_path / "small"
    _tmpfs(mnt, "256k")
    try:
        _fill(mnt)
        done = subprocess.run(cmd(real_archive, probe_objects["base"], tmp_path / "out",
                                  mnt / "cache", bpftool), env=ENV, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        assert "0 failed" in done.stderr
    finally:
        subprocess.run(["umount", str(mnt)])


def test_scale_benchmark_runs_small(tmp_path: Path, real_archive: Path) -> None:
    """The scale benchmark itself works (CI runs it at a small size; the README's figures come
    from the full 5000-kernel run)."""
    need("bpftool")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_scale.py"),
                           "--sizes", "60,120", "--workdir", str(tmp_path), "--archive",
                           str(real_archive)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "kernels" in done.stdout and "peak RSS" in done.stdout


def test_scale_benchmarks_report_gobtfgen_s_own_peak_not_the_benchmark_s() -> None:
    """ru_maxrss survives exec: a benchmark that had grown to 256 MiB saw its own peak as
    gobtfgen's. The wrapper's figure stays gobtfgen's (an interpreter and `gobtfgen host`)."""
    from benchmarks.bench_scale import WRAPPER

    grown = bytearray(256 << 20)
    grown[::4096] = b"\1" * (len(grown) // 4096)  # a byte a page: every page resident
    with open("/proc/self/status") as f:
        ours = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert ours >= 256 << 10
    done = subprocess.run([sys.executable, "-c", WRAPPER, "host"], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    del grown
    assert done.returncode == 0, done.stderr
    reported = int(done.stderr.split("maxrss_kib ")[1].split()[0])
    assert reported < 128 << 10, f"gobtfgen host reported {reported} KiB (this process: {ours})"
