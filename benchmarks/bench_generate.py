#!/usr/bin/env python3
"""Time gobtfgen generate against the anchors' baseline and the xz floor, in one run.

    python benchmarks/bench_generate.py [--archive DIR] [--jobs N] [--repeat R] [--object F]

Cases, each the median of --repeat runs of the real CLI (a fresh process, as make runs it):
  cold              empty cache, base object
  code changed      the object rebuilt after an edit that keeps its CO-RE relocations
  nothing changed   the same command again
  relocs changed    the object now has one more relocation (archive unchanged)
Baseline: what lab3 / Inspektor Gadget do per kernel: `tar -xJf` into a temp dir, then
`bpftool gen min_core_btf`, with the same parallelism. Floor: `xz -dc` of the same files alone.
Also prints the payload size against the sum of raw minimized BTFs (what lab3 embeds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gobtfgen.archive import ARCHES, scan_archive  # noqa: E402


def compile_variants(out: Path, objects: list[Path]) -> dict[str, Path]:
    if objects:  # user objects: no relocation variant to build, reuse them for each case
        return {"base": objects[0], "code": objects[0], "relocs": objects[0]}
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                               text=True).stdout.strip()
    result = {}
    for name, variant in (("base", 0), ("code", 1), ("relocs", 2)):
        path = out / f"probe_{name}.o"
        subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                        f"-I/usr/include/{multiarch}", f"-DVARIANT={variant}", "-c",
                        str(REPO / "tests/fixtures/probe.bpf.c"), "-o", str(path)], check=True)
        result[name] = path
    return result


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of every process it ran): CPU time is what a busy machine
    disturbs least, so both are printed."""
    start, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - start, _cpu() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--archive", type=Path, default=None,
                    help="default: the sample, else the test corpus")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--object", type=Path, action="append", default=[])
    ap.add_argument("--minimizer", default="python",
                    help="as gobtfgen generate (default: the tool's default)")
    args = ap.parse_args()
    if args.archive is None:
        from benchmarks.archives import default_archive

        args.archive = default_archive()
    if not args.archive.is_dir():
        print(f"archive {args.archive} not found; pass --archive", file=sys.stderr)
        return 2
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    kernels, _ = scan_archive(args.archive, ARCHES)
    work = Path(tempfile.mkdtemp(prefix="gobtfgen-bench-"))
    try:
        objs = compile_variants(work, args.object)
        target = work / "probe_bpfel.o"

        # As installed, gobtfgen runs from compiled bytecode: never measure Python compiling it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

        def gobtfgen(cache: Path) -> None:
            subprocess.run([sys.executable, "-m", "gobtfgen", "generate", "--archive",
                            str(args.archive), "--object", str(target), "--output-dir",
                            str(work / "out"), "--cache-dir", str(cache), "--jobs",
                            str(args.jobs), "--minimizer", args.minimizer, "--bpftool", bpftool,
                            "--quiet"], check=True, cwd=REPO, env=env)

        shutil.copy(objs["base"], target)
        gobtfgen(work / "warmup-cache")  # compiles the bytecode; not measured
        shutil.rmtree(work / "out", ignore_errors=True)
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in
                                           ("cold", "code changed", "nothing changed",
                                            "relocs changed", "baseline", "floor")}
        for i in range(args.repeat):
            cache = work / f"cache{i}"
            shutil.rmtree(work / "out", ignore_errors=True)
            shutil.copy(objs["base"], target)
            results["cold"].append(timed(lambda c=cache: gobtfgen(c)))
            shutil.copy(objs["code"], target)
            results["code changed"].append(timed(lambda c=cache: gobtfgen(c)))
            results["nothing changed"].append(timed(lambda c=cache: gobtfgen(c)))
            shutil.copy(objs["relocs"], target)
            results["relocs changed"].append(timed(lambda c=cache: gobtfgen(c)))
            shutil.copy(objs["base"], target)

            def baseline() -> None:
                def one(k):  # type: ignore[no-untyped-def]
                    with tempfile.TemporaryDirectory(dir=work) as tmp:
                        subprocess.run(["tar", "-xJf", str(k.path), "-C", tmp], check=True)
                        subprocess.run([bpftool, "gen", "min_core_btf",
                                        f"{tmp}/{k.release}.btf", f"{tmp}/min.btf", str(target)],
                                       check=True, capture_output=True)
                with ThreadPoolExecutor(args.jobs) as pool:
                    list(pool.map(one, kernels))

            def floor() -> None:
                def one(k):  # type: ignore[no-untyped-def]
                    subprocess.run(["xz", "-dc", str(k.path)], check=True,
                                   stdout=subprocess.DEVNULL)
                with ThreadPoolExecutor(args.jobs) as pool:
                    list(pool.map(one, kernels))

            results["baseline"].append(timed(baseline))
            results["floor"].append(timed(floor))

        med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
        cold = med["cold"]
        print(f"gobtfgen generate: {len(kernels)} kernels from {args.archive}, jobs={args.jobs}, "
              f"minimizer={args.minimizer}, median of {args.repeat}")
        print(f"{'case':<18}{'seconds':>10}{'vs cold':>10}{'vs baseline':>13}{'CPU s':>9}"
              f"{'CPU vs cold':>13}  target")
        targets = {"cold": "<= baseline", "relocs changed": "<= 50% of cold",
                   "code changed": "<= 5% of cold", "nothing changed": "<= 2% of cold"}
        for case in ("cold", "relocs changed", "code changed", "nothing changed", "baseline",
                     "floor"):
            print(f"{case:<18}{med[case]:>10.3f}{100 * med[case] / cold:>9.1f}%"
                  f"{med[case] / med['baseline']:>12.2f}x{cpu[case]:>9.3f}"
                  f"{100 * cpu[case] / cpu['cold']:>12.1f}%  {targets.get(case, '')}")
        manifest = json.loads((work / "out" / "btfgen_manifest.json").read_text())
        raw = sum(p["raw_bytes"] for p in manifest["payload"].values())
        size = sum(p["payload_bytes"] for p in manifest["payload"].values())
        print(f"payload: {size} bytes for {raw} bytes of raw minimized BTF "
              f"({100 * size / max(raw, 1):.1f}%, target <= 10%)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
