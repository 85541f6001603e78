#!/usr/bin/env python3
"""The built-in minimizer against bpftool gen min_core_btf: per kernel, then whole generate.

    python benchmarks/bench_minimizer.py [--archive DIR] [--repeat R] [--limit N]
                                         [--generate-repeat G] [--jobs J] [--wall]

Per kernel, for every kernel of the archive (default ../shared/btfhub-sample), decompressed
once up front (all sides read the same raw .btf file, so xz is in none of the times):
  bpftool      `bpftool gen min_core_btf` as a process, as gobtfgen's bpftool backend runs it;
  python       PythonMinimizer.minimize() in this process, objects parsed once for the run (the
               way a gobtfgen worker serves many kernels), the kernel seen for the first time:
               its records are framed (gobtfgen.btf.index_types);
  python idx   the same with the kernel's type index from an earlier run, as generate's cache
               (raw/<sha>.idx) gives it once a kernel has been minimized before.
The three run interleaved, --repeat rounds, and each keeps its best time, as CPU time (user +
system; for bpftool, of the child process): on a shared machine wall time mostly measures the
neighbours, and interleaving spreads their noise over all three alike. --wall uses wall time.
Two object sets: one object (a tracer) and five.
Sizes: the minimized BTF of the five objects, python against bpftool.

Whole generate (--generate-repeat G rounds, 0 to skip, median): `gobtfgen generate --quiet`
as a fresh process, with --minimizer bpftool and --minimizer python alternating, on the same
archive: cold (empty cache) and relocations changed (the object gained a relocation: every
kernel is minimized again, from the cache's raw BTF).

Targets (issue 5): python <= 1.5x bpftool per kernel with one object, <= 1x with five; whole
generate no slower with python; python's output at most half of bpftool's (printed both as the
minimized BTFs of five objects and as the payload generate packs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
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
SIDES = ("bpftool", "python", "python idx")

WALL = False


def _clock() -> float:
    if WALL:
        return time.perf_counter()
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = _clock()
    result = fn()
    return _clock() - t0, result


def per_kernel(args: argparse.Namespace, tmp: Path, objs: dict[str, Path]) -> None:
    with (args.archive / "MANIFEST.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if args.limit:
        rows = rows[:args.limit]
    raws = []
    for row in rows:
        raw = tmp / (row["path"].replace("/", "_") + ".btf")
        raw.write_bytes(read_kernel_btf(args.archive / row["path"]))
        raws.append((row["path"].removesuffix(".btf.tar.xz"), raw))
    minimizer = PythonMinimizer()
    out = tmp / "bpftool.btf"
    totals = {s: dict.fromkeys(SIDES, 0.0) for s in SETS}
    ratios: dict[str, dict[str, list[float]]] = {s: {"python": [], "python idx": []}
                                                 for s in SETS}
    sizes: list[tuple[int, int]] = []
    failures = dict.fromkeys(SETS, 0)
    print(f"{'kernel':52} {'set':9} {'bpftool':>8} {'python':>8} {'ratio':>5} "
          f"{'py idx':>8} {'ratio':>5} {'bt size':>7} {'py size':>7}")
    for key, raw in raws:
        index = raw.with_suffix(".idx")
        for set_name, names in SETS.items():
            paths = [objs[n] for n in names]
            minimizer.parse_objects(paths)  # parsed once per run, as a worker does
            index.unlink(missing_ok=True)
            minimizer.minimize(raw, paths, index=index)  # writes the index; not timed

            def run_bpftool(paths: list[Path] = paths, raw: Path = raw) -> int:
                return subprocess.run([args.bpftool, "gen", "min_core_btf", str(raw), str(out),
                                       *map(str, paths)], capture_output=True).returncode

            def run_python(paths: list[Path] = paths, raw: Path = raw) -> bytes:
                return minimizer.minimize(raw, paths)

            def run_indexed(paths: list[Path] = paths, raw: Path = raw,
                            index: Path = index) -> bytes:
                return minimizer.minimize(raw, paths, index=index)

            best = dict.fromkeys(SIDES, float("inf"))
            rc: object = 0
            py_out: object = b""
            for _ in range(args.repeat):
                for side, fn in (("bpftool", run_bpftool), ("python", run_python),
                                 ("python idx", run_indexed)):
                    t, result = timed(fn)
                    best[side] = min(best[side], t)
                    if side == "bpftool":
                        rc = result
                    elif side == "python":
                        py_out = result
            assert isinstance(py_out, bytes)
            bt_size = out.stat().st_size if rc == 0 else 0
            if rc != 0:
                failures[set_name] += 1
            for side in SIDES:
                totals[set_name][side] += best[side]
            for side in ("python", "python idx"):
                ratios[set_name][side].append(best[side] / best["bpftool"])
            if set_name == "5 objects" and rc == 0:
                sizes.append((bt_size, len(py_out)))
            print(f"{key[:52]:52} {set_name:9} {best['bpftool'] * 1000:6.1f}ms "
                  f"{best['python'] * 1000:6.1f}ms {best['python'] / best['bpftool']:5.2f} "
                  f"{best['python idx'] * 1000:6.1f}ms "
                  f"{best['python idx'] / best['bpftool']:5.2f} {bt_size:7} {len(py_out):7}")
        index.unlink(missing_ok=True)
    print()
    for set_name in SETS:
        t = totals[set_name]
        print(f"{set_name}: per kernel, total over {len(raws)} kernels (median ratio, max) of "
              f"bpftool {t['bpftool']:.3f}s; python first sight {t['python']:.3f}s "
              f"x{t['python'] / t['bpftool']:.2f} (median "
              f"x{statistics.median(ratios[set_name]['python']):.2f}, max "
              f"x{max(ratios[set_name]['python']):.2f}); python indexed {t['python idx']:.3f}s "
              f"x{t['python idx'] / t['bpftool']:.2f} (median "
              f"x{statistics.median(ratios[set_name]['python idx']):.2f}); bpftool failed on "
              f"{failures[set_name]} kernels")
    if sizes:
        bt = sum(s[0] for s in sizes)
        py = sum(s[1] for s in sizes)
        print(f"minimized size (5 objects, {len(sizes)} kernels): bpftool {bt} bytes, python "
              f"{py} bytes (x{py / bt:.2f}); per kernel median "
              f"x{statistics.median(p / b for b, p in sizes):.2f}")


def _probe(out: Path, variant: int) -> Path:
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                               text=True).stdout.strip()
    path = out / f"probe_{variant}.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    f"-I/usr/include/{multiarch}", f"-DVARIANT={variant}", "-c",
                    str(REPO / "tests/fixtures/probe.bpf.c"), "-o", str(path)], check=True)
    return path


def whole_generate(args: argparse.Namespace, tmp: Path) -> None:
    base, relocs = _probe(tmp, 0), _probe(tmp, 2)
    target = tmp / "probe_bpfel.o"
    # As installed, gobtfgen runs from compiled bytecode: never measure Python compiling it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def generate(minimizer: str, cache: Path) -> tuple[float, float]:
        def cpu() -> float:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime
        start, c0 = time.perf_counter(), cpu()
        subprocess.run([sys.executable, "-m", "gobtfgen", "generate", "--archive",
                        str(args.archive), "--object", str(target), "--output-dir",
                        str(tmp / f"out-{minimizer}"), "--cache-dir", str(cache), "--jobs",
                        str(args.jobs), "--minimizer", minimizer, "--bpftool", args.bpftool,
                        "--quiet"], check=True, cwd=REPO, env=env)
        return time.perf_counter() - start, cpu() - c0

    shutil.copy(base, target)
    for m in ("bpftool", "python"):
        generate(m, tmp / f"warmup-{m}")  # compiles the bytecode; not measured
    cases = ("cold", "relocs changed")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {
        (m, c): [] for m in ("bpftool", "python") for c in cases}
    for i in range(args.generate_repeat):
        for m in ("bpftool", "python") if i % 2 == 0 else ("python", "bpftool"):
            cache = tmp / f"cache-{m}-{i}"
            shutil.copy(base, target)
            results[(m, "cold")].append(generate(m, cache))
            shutil.copy(relocs, target)
            results[(m, "relocs changed")].append(generate(m, cache))
            shutil.rmtree(cache, ignore_errors=True)
    payload = {}
    for m in ("bpftool", "python"):
        manifest = json.loads((tmp / f"out-{m}" / "btfgen_manifest.json").read_text())
        payload[m] = sum(p["payload_bytes"] for p in manifest["payload"].values())
    print(f"\nwhole generate: {args.archive}, jobs={args.jobs}, median of "
          f"{args.generate_repeat} (wall seconds, CPU seconds)")
    for c in cases:
        wall = {m: statistics.median(w for w, _ in results[(m, c)]) for m in ("bpftool",
                                                                             "python")}
        cpu = {m: statistics.median(u for _, u in results[(m, c)]) for m in ("bpftool",
                                                                            "python")}
        print(f"  {c:15} bpftool {wall['bpftool']:.3f}s ({cpu['bpftool']:.3f} CPU), python "
              f"{wall['python']:.3f}s ({cpu['python']:.3f} CPU): python/bpftool wall "
              f"x{wall['python'] / wall['bpftool']:.2f}, CPU x{cpu['python'] / cpu['bpftool']:.2f}")
    ratio = payload["python"] / payload["bpftool"]
    print(f"  payload of the last generation (both arches): bpftool {payload['bpftool']} bytes, "
          f"python {payload['python']} bytes (x{ratio:.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=None,
                    help="default: the sample, else the test corpus")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="only the first N kernels")
    ap.add_argument("--generate-repeat", type=int, default=3,
                    help="rounds of whole generate per minimizer (0: skip)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bpftool", default=shutil.which("bpftool") or "/usr/sbin/bpftool")
    ap.add_argument("--wall", action="store_true", help="measure wall time, not CPU time")
    args = ap.parse_args()
    if args.archive is None:
        from benchmarks.archives import default_archive

        args.archive = default_archive()
    global WALL
    WALL = args.wall
    if not (args.archive / "MANIFEST.tsv").is_file():
        print(f"no {args.archive / 'MANIFEST.tsv'}: pass --archive with a MANIFEST.tsv (the "
              "sample archive)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gobtfgen-bench-") as tmp_s:
        tmp = Path(tmp_s)
        objs = build_objects(tmp / "objects")
        per_kernel(args, tmp, objs)
        if args.generate_repeat > 0:
            whole_generate(args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
