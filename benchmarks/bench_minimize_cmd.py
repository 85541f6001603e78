#!/usr/bin/env python3
"""`gobtfgen minimize FULL OUT OBJ` against `bpftool gen min_core_btf FULL OUT OBJ`, both as
processes, on one typical kernel (raw BTF: Debian 12's 6.1.0-56-amd64 from the real-kernel
corpus, else this host's /sys/kernel/btf/vmlinux).

    python benchmarks/bench_minimize_cmd.py [--repeats 9] [--kernel FILE]

Cases, run interleaved, --repeats rounds, medians of wall and CPU (user + system of the child):
  bpftool          bpftool gen min_core_btf
  gobtfgen cold    gobtfgen minimize with an empty cache (GOBTFGEN_CACHE_DIR: a fresh dir)
  gobtfgen seen    the same kernel minimized before (its type index in the cache)
  python -c pass   the interpreter alone (the floor of any Python command)
Python runs with its bytecode cached (PYTHONPYCACHEPREFIX), as an installed gobtfgen runs, even
where PYTHONDONTWRITEBYTECODE is set. Object: tests/fixtures/probe.bpf.c (clang). Targets (issue
15 item 3): cold <= 2x bpftool, seen < bpftool (process time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def typical_kernel(tmp: Path) -> Path:
    from gobtfgen.archive import read_kernel_btf
    from tests import realkernels

    for k in realkernels.KERNELS:
        if k.key == "debian/12/x86_64/6.1.0-56-amd64":
            raw = tmp / "kernel.btf"
            raw.write_bytes(read_kernel_btf(k.path))
            return raw
    return Path("/sys/kernel/btf/vmlinux")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}: {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--kernel", type=Path, help="raw kernel BTF (default: see above)")
    args = ap.parse_args()
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    from tests.conftest import FIXTURES, compile_bpf

    with tempfile.TemporaryDirectory(prefix="bench-minimize-") as tmp_s:
        tmp = Path(tmp_s)
        kernel = args.kernel or typical_kernel(tmp)
        obj = compile_bpf(FIXTURES / "probe.bpf.c", tmp / "probe.o", "VARIANT=0")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pyc")
        env["PYTHONPATH"] = str(REPO)
        seen_cache = tmp / "seen-cache"
        gob = [sys.executable, "-m", "gobtfgen", "minimize", str(kernel)]
        # Warm-up: bytecode compiled, the seen cache filled, page cache warm for every case.
        subprocess.run([*gob, str(tmp / "w.btf"), str(obj)], check=True, cwd=REPO,
                       env={**env, "GOBTFGEN_CACHE_DIR": str(seen_cache)})
        subprocess.run([bpftool, "gen", "min_core_btf", str(kernel), str(tmp / "b.btf"),
                        str(obj)], check=True)
        cases = {
            "bpftool": lambda i: timed([bpftool, "gen", "min_core_btf", str(kernel),
                                        str(tmp / "b.btf"), str(obj)], env),
            "gobtfgen cold": lambda i: timed(
                [*gob, str(tmp / "c.btf"), str(obj)],
                {**env, "GOBTFGEN_CACHE_DIR": str(tmp / f"cold-cache-{i}")}),
            "gobtfgen seen": lambda i: timed([*gob, str(tmp / "s.btf"), str(obj)],
                                             {**env, "GOBTFGEN_CACHE_DIR": str(seen_cache)}),
            "python -c pass": lambda i: timed([sys.executable, "-c", "pass"], env),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for i in range(args.repeats):
            for name, run in cases.items():
                results[name].append(run(i))
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"kernel {kernel} ({kernel.stat().st_size / 1e6:.1f} MB raw BTF), object "
              f"probe.bpf.c, {args.repeats} rounds, medians, load average {load}, "
              f"{os.cpu_count()} CPUs")
        med = {name: (statistics.median(w for w, _ in rows), statistics.median(c for _, c in rows))
               for name, rows in results.items()}
        bw, bc = med["bpftool"]
        print(f"{'case':<16}{'wall':>10}{'vs bpftool':>12}{'CPU':>10}{'vs bpftool':>12}")
        for name, (w, c) in med.items():
            print(f"{name:<16}{w * 1e3:>8.1f}ms{w / bw:>11.2f}x{c * 1e3:>8.1f}ms{c / bc:>11.2f}x")
        cold, seen = med["gobtfgen cold"][0] / bw, med["gobtfgen seen"][0] / bw
        print(f"target cold <= 2x bpftool (wall): {'met' if cold <= 2 else 'MISSED'} "
              f"({cold:.2f}x); seen < bpftool: {'met' if seen < 1 else 'MISSED'} ({seen:.2f}x)")


if __name__ == "__main__":
    main()
