#!/usr/bin/env python3
"""The built-in minimizer against bpftool gen min_core_btf, per kernel, in one run.

    python benchmarks/bench_minimizer.py [--archive DIR] [--repeat R] [--limit N]

For every kernel of the archive (default ../shared/btfhub-sample), decompressed once up front
(both sides read the same raw .btf file, so xz is not part of either time):
  bpftool   `bpftool gen min_core_btf` as a process, as gobtfgen's bpftool backend runs it;
  python    PythonMinimizer.minimize() in this process, objects parsed once for the run (the
            way a gobtfgen worker serves many kernels).
Each time is the best of --repeat runs, as CPU time (user + system; for bpftool, of the child
process): on a shared machine wall time mostly measures the neighbours. --wall uses wall time.
Two object sets: one object (a tracer) and five.
Sizes: the minimized BTF of the five objects, python against bpftool.
Targets (issue 5): python <= 1.5x bpftool per kernel with one object, <= 1x with five;
python's output at most half of bpftool's.
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gobtfgen.archive import read_kernel_btf  # noqa: E402
from gobtfgen.minimize.python import PythonMinimizer  # noqa: E402
from tests.bpfobjs import build_objects  # noqa: E402

SETS = {"1 object": ("tracer",), "5 objects": ("tracer", "fields", "net", "matches", "synth")}


WALL = False


def _clock() -> float:
    if WALL:
        return time.perf_counter()
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times = []
    result: object = None
    for _ in range(repeat):
        t0 = _clock()
        result = fn()
        times.append(_clock() - t0)
    return min(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "btfhub-sample")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="only the first N kernels")
    ap.add_argument("--bpftool", default="bpftool")
    ap.add_argument("--wall", action="store_true", help="measure wall time, not CPU time")
    args = ap.parse_args()
    global WALL
    WALL = args.wall
    manifest = args.archive / "MANIFEST.tsv"
    if not manifest.is_file():
        print(f"no {manifest}: pass --archive with a MANIFEST.tsv (the sample archive)",
              file=sys.stderr)
        return 2
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if args.limit:
        rows = rows[:args.limit]
    with tempfile.TemporaryDirectory(prefix="gobtfgen-bench-") as tmp_s:
        tmp = Path(tmp_s)
        objs = build_objects(tmp / "objects")
        raws = []
        xz_total = 0.0
        for row in rows:
            raw = tmp / (row["path"].replace("/", "_") + ".btf")
            src = args.archive / row["path"]
            t_xz, blob = best(lambda src=src: read_kernel_btf(src), 1)  # type: ignore[misc]
            xz_total += t_xz
            assert isinstance(blob, bytes)
            raw.write_bytes(blob)
            raws.append((row["path"].removesuffix(".btf.tar.xz"), raw))
        minimizer = PythonMinimizer()
        out = tmp / "bpftool.btf"
        totals: dict[str, dict[str, float]] = {s: {"bpftool": 0.0, "python": 0.0} for s in SETS}
        ratios: dict[str, list[float]] = {s: [] for s in SETS}
        sizes: list[tuple[int, int]] = []
        failures: dict[str, int] = {s: 0 for s in SETS}
        print(f"{'kernel':58} {'set':9} {'bpftool':>8} {'python':>8} {'ratio':>6} "
              f"{'bt size':>8} {'py size':>8}")
        for key, raw in raws:
            for set_name, names in SETS.items():
                paths = [objs[n] for n in names]
                minimizer.parse_objects(paths)  # parsed once per run, as a worker does

                def run_bpftool(paths: list[Path] = paths, raw: Path = raw) -> int:
                    proc = subprocess.run([args.bpftool, "gen", "min_core_btf", str(raw),
                                           str(out), *map(str, paths)], capture_output=True)
                    return proc.returncode

                t_bt, rc = best(run_bpftool, args.repeat)
                def run_python(paths: list[Path] = paths, raw: Path = raw) -> bytes:
                    return minimizer.minimize(raw, paths)

                t_py, py_out = best(run_python, args.repeat)
                bt_size = out.stat().st_size if rc == 0 else 0
                if rc != 0:
                    failures[set_name] += 1
                assert isinstance(py_out, bytes)
                totals[set_name]["bpftool"] += t_bt
                totals[set_name]["python"] += t_py
                ratios[set_name].append(t_py / t_bt)
                if set_name == "5 objects" and rc == 0:
                    sizes.append((bt_size, len(py_out)))
                print(f"{key[:58]:58} {set_name:9} {t_bt * 1000:7.1f}ms {t_py * 1000:7.1f}ms "
                      f"{t_py / t_bt:6.2f} {bt_size:8} {len(py_out):8}")
        print()
        for set_name in SETS:
            t = totals[set_name]
            r = ratios[set_name]
            print(f"{set_name}: total bpftool {t['bpftool']:.2f}s, python {t['python']:.2f}s "
                  f"(x{t['python'] / t['bpftool']:.2f}); per-kernel ratio median "
                  f"{statistics.median(r):.2f}, max {max(r):.2f}; bpftool failed on "
                  f"{failures[set_name]} kernels")
        n = len(raws)
        print(f"context: reading a kernel from its .btf.tar.xz costs {xz_total / n * 1000:.1f}ms "
              "on average, paid by either minimizer in a cold run; per kernel including it:")
        for set_name in SETS:
            t = totals[set_name]
            print(f"  {set_name}: bpftool {(t['bpftool'] + xz_total) / n * 1000:.1f}ms, python "
                  f"{(t['python'] + xz_total) / n * 1000:.1f}ms "
                  f"(x{(t['python'] + xz_total) / (t['bpftool'] + xz_total):.2f})")
        if sizes:
            bt = sum(s[0] for s in sizes)
            py = sum(s[1] for s in sizes)
            print(f"payload (5 objects, {len(sizes)} kernels): bpftool {bt} bytes, python {py} "
                  f"bytes (x{py / bt:.2f}); per kernel median "
                  f"x{statistics.median(p / b for b, p in sizes):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
