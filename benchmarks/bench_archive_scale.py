#!/usr/bin/env python3
"""gobtfgen generate at the size users run it: the whole archive (4,300 kernels), jobs=2.

    python benchmarks/bench_archive_scale.py --archive-dir DIR [--kernels N] [--work DIR]

The archive is benchmarks/scale_archive.py's (built into --archive-dir once, reused after):
kernels whose raw BTF all differ, so every cache entry is real. One run prints, each through
the real CLI in a fresh process, at the default cache settings (no --cache-limit):
  cold              empty cache, base object (tests/fixtures/probe.bpf.c)
  relocs changed    the object now has one more relocation: every kernel minimized again
  code changed      the object rebuilt after an edit that keeps its relocations
  nothing changed   the same command again
  xz floor          decompression alone of every archive file, same parallelism, liblzma in
                    worker processes (what gobtfgen calls); and `xz -dc` processes on every
                    --baseline-every'th file, scaled up (process starts included, as in
                    bench_generate.py's floor)
  baseline          lab3 / Inspektor Gadget per kernel: `tar -xJf`, `bpftool gen min_core_btf`,
                    on every --baseline-every'th kernel, scaled up to the whole archive
  peak RSS          of the gobtfgen process and of its largest worker, in the cold run here
                    and in a cold run over a tenth of the kernels (flat means it does not grow)
  cache on disk     what the cache directory takes after these runs (allocated blocks), against
                    the archive's .tar.xz bytes
  stages            where a cold kernel's CPU goes: each step of gobtfgen's cold path timed on
                    its own in this process, on every --stages-every'th kernel, against the xz
                    the floor is made of (and what the pools of the two runs add)
Each case prints its wall time and the CPU time of every process it ran (the machine may be
shared: CPU time is what other load disturbs least), and each ratio both ways.
Read the figures knowing that the derived kernels share more across kernels than the real
archive does (see scale_archive.py): the cache here compresses each kernel on its own, so that
does not flatter it, but any cross-kernel dedup would look better than it is.
--kernels N runs all of it on the first N kernels (every base kernel comes before repeats).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import scale_archive  # noqa: E402

# The probe object in its three variants and the children's CPU clock, as bench_generate
# measures them; the generate wrapper that reports peak RSS, as bench_scale runs it.
from benchmarks.bench_generate import _cpu, compile_variants  # noqa: E402
from benchmarks.bench_scale import WRAPPER  # noqa: E402
from gobtfgen.archive import ARCHES, scan_archive  # noqa: E402
from gobtfgen.cache import Cache  # noqa: E402

# The cache a full run leaves: about 20% of the raw BTF (stripped kernels, zstd 1); 37% without
# the C extension (whole kernels and type indexes), which the estimate allows for.
CACHE_SHARE = 0.40


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def generate(archive: Path, obj: Path, out: Path, cache: Path, jobs: int
             ) -> tuple[float, int, int, str]:
    """(seconds, peak RSS KiB of gobtfgen, of its largest child, summary line)."""
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "GOBTFGEN_CACHE_LIMIT")}
    done = subprocess.run([sys.executable, "-c", WRAPPER, "generate", "--archive", str(archive),
                           "--object", str(obj), "--output-dir", str(out), "--cache-dir",
                           str(cache), "--jobs", str(jobs), "--pkg", "main"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"generate failed:\n{done.stderr[-3000:]}")
    found = re.search(r"maxrss_kib (\d+) (\d+)", done.stderr)
    assert found is not None, done.stderr
    summary = next((line for line in done.stderr.splitlines() if " kernels: " in line), "")
    return elapsed, int(found[1]), int(found[2]), summary.removeprefix("gobtfgen: ")


def _inflate(path: str) -> int:
    import lzma

    with open(path, "rb") as f:
        return len(lzma.decompress(f.read()))


def xz_floor_inprocess(paths: list[Path], jobs: int) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_inflate, [str(p) for p in paths], chunksize=16))
    return time.perf_counter() - start


def xz_floor_processes(paths: list[Path], jobs: int) -> float:
    def one(path: Path) -> None:
        subprocess.run(["xz", "-dc", str(path)], check=True, stdout=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def baseline(kernels: list[tuple[Path, str]], obj: Path, jobs: int, work: Path) -> float:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"

    def one(k: tuple[Path, str]) -> None:
        path, release = k
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            subprocess.run(["tar", "-xJf", str(path), "-C", tmp], check=True)
            subprocess.run([bpftool, "gen", "min_core_btf", f"{tmp}/{release}.btf",
                            f"{tmp}/min.btf", str(obj)], check=True, capture_output=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, kernels))
    return time.perf_counter() - start


# What a cold run does to each kernel, in order (gobtfgen.pipeline._minimize_kernel and
# kernel_btf), each timed on its own in this process.
STAGES = ("read the file", "sha256 of the file (cache key)", "xz (liblzma)", "tar",
          "sha256 of the raw BTF (PreferEmbedded)", "strip", "cache entry: zstd -1",
          "cache entry: write", "minimize (built-in)")


def cold_stages(paths: list[Path], obj: Path, work: Path) -> tuple[dict[str, float], float]:
    """CPU seconds per stage over these kernels, and the whole cold run's CPU of a kernel
    besides (what is not a stage: the worker pool, its messages, the main process)."""
    import hashlib

    from gobtfgen.archive import btf_from_tar, inflate_xz
    from gobtfgen.btf import native, strip
    from gobtfgen.cache import RawEntry, atomic_write
    from gobtfgen.minimize import get_minimizer
    from gobtfgen.pipeline import fullsum_of

    native.keep_heap()  # as the workers do
    minimizer = get_minimizer("python")
    minimizer.prepare([obj])
    spent = dict.fromkeys(STAGES, 0.0)
    clock = time.process_time
    for path in paths:
        marks = [clock()]
        data = path.read_bytes()
        marks.append(clock())
        sha = hashlib.sha256(data).hexdigest()
        marks.append(clock())
        tar = inflate_xz(data, what=path)
        marks.append(clock())
        raw = btf_from_tar(tar, what=path)
        marks.append(clock())
        fullsum_of(raw)
        marks.append(clock())
        stripped = strip.strip(raw)
        marks.append(clock())
        entry = RawEntry.encode(sha, stripped or raw, stripped=stripped is not None)
        marks.append(clock())
        atomic_write(work / "stage-entry", entry)
        marks.append(clock())
        minimizer.minimize(path, [obj], data=stripped or raw)
        marks.append(clock())
        for stage, (a, b) in zip(STAGES, zip(marks, marks[1:], strict=False), strict=True):
            spent[stage] += b - a
    return spent, len(paths)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive-dir", type=Path, required=True,
                    help="where scale_archive.py builds (or has built) the archive")
    ap.add_argument("--count", type=int, default=4300, help="kernels the archive holds")
    ap.add_argument("--kernels", type=int, default=None,
                    help="run on the first N kernels only (default: all)")
    ap.add_argument("--work", type=Path, default=None,
                    help="where the cache and outputs go (default: next to the archive)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--baseline-every", type=int, default=20,
                    help="the baseline runs on every Nth kernel, scaled up")
    ap.add_argument("--stages-every", type=int, default=50,
                    help="the per-stage CPU of a cold kernel is measured on every Nth kernel")
    ap.add_argument("--keep", action="store_true", help="keep the cache and outputs")
    args = ap.parse_args()
    load_before = uptime()
    dest = scale_archive.build(args.archive_dir, max(args.count, args.kernels or 0))
    record = scale_archive.record_of(dest)
    entries = record["kernels"]
    assert isinstance(entries, list)
    n = args.kernels or len(entries)
    work = args.work or dest.parent / "bench-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive = dest if n == len(entries) else scale_archive.subset(dest, n, work / "archive")
    chosen = entries[:n]
    xz_bytes = sum(int(k["xz_bytes"]) for k in chosen)
    base_xz_bytes = sum(int(k["base_xz_bytes"]) for k in chosen)
    raw_bytes = sum(int(k["raw_bytes"]) for k in chosen)
    need = int(raw_bytes * CACHE_SHARE * 1.15) + (1 << 30)
    free = shutil.disk_usage(work).free
    print(f"bench: {n} kernels, {xz_bytes / 1e9:.2f} GB .tar.xz, {raw_bytes / 1e9:.2f} GB raw "
          f"BTF; the caches need about {need / 1e9:.1f} GB in {work} ({free / 1e9:.1f} GB free)",
          file=sys.stderr)
    if free < need:
        sys.exit(f"bench: not enough disk in {work}: about {need / 1e9:.1f} GB needed, "
                 f"{free / 1e9:.1f} GB free; pass --work on a larger disk or fewer --kernels")
    try:
        objs = compile_variants(work, [])
        target = work / "probe_bpfel.o"
        out, cache = work / "out", work / "cache"
        kernels, _ = scan_archive(archive, ARCHES)
        assert len(kernels) == n, (len(kernels), n)
        paths = [k.path for k in kernels]

        def say(what: str) -> None:
            print(f"bench: {what} (load {uptime()})", file=sys.stderr)

        # Bytecode compiled, as an installed gobtfgen has it; not measured.
        shutil.copy(objs["base"], target)
        warm = scale_archive.subset(dest, min(n, 20), work / "archive-warm")
        generate(warm, target, work / "warm-out", work / "warm-cache", args.jobs)
        for tmp in ("archive-warm", "warm-out", "warm-cache"):
            shutil.rmtree(work / tmp)
        small = max(1, n // 10)
        small_archive = scale_archive.subset(dest, small, work / "archive-small")

        rows: dict[str, float] = {}  # wall seconds
        cpu: dict[str, float] = {}  # CPU seconds of every process the case ran
        notes: dict[str, str] = {}

        def case(name: str, fn: Callable[[], object], scale: float = 1.0) -> object:
            start = _cpu()
            wall = time.perf_counter()
            got = fn()
            rows[name] = (time.perf_counter() - wall) * scale
            cpu[name] = (_cpu() - start) * scale
            return got

        def gen(name: str) -> tuple[float, int, int, str]:
            got = case(name, lambda: generate(archive, target, out, cache, args.jobs))
            assert isinstance(got, tuple)
            notes[name] = got[3]
            return got

        say("xz floor, liblzma in worker processes")
        case("xz floor", lambda: xz_floor_inprocess(paths, args.jobs))
        say("cold")
        _, rss_main, rss_child, _ = gen("cold")
        disk_cold = Cache(cache).usage()
        sampled_paths = paths[::args.baseline_every]
        say("xz floor, xz -dc processes, sampled")
        case("xz -dc floor", lambda: xz_floor_processes(sampled_paths, args.jobs),
             n / len(sampled_paths))
        shutil.copy(objs["relocs"], target)
        say("relocations changed")
        gen("relocs changed")
        # Back to the base relocations (their results are cached from the cold run) in an
        # object whose code changed.
        shutil.copy(objs["code"], target)
        say("code changed, relocations unchanged")
        gen("code changed")
        say("nothing changed")
        gen("nothing changed")
        disk = Cache(cache).usage()
        sampled = [(k.path, k.release) for k in kernels[::args.baseline_every]]
        say(f"baseline on {len(sampled)} kernels")
        case("baseline", lambda: baseline(sampled, objs["base"], args.jobs, work),
             n / len(sampled))
        say(f"cold over {small} kernels (peak RSS at a tenth of the size)")
        small_time, small_main, small_child, _ = generate(
            small_archive, objs["base"], work / "out-small", work / "cache-small", args.jobs)
        staged = kernels[::args.stages_every]
        say(f"per-stage CPU of a cold kernel on {len(staged)} kernels, in this process")
        stages, staged_n = cold_stages([k.path for k in staged], objs["base"], work)
        load_after = uptime()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def ratio(name: str, of: str, limit: float, pct: bool = True) -> tuple[str, str, str]:
        """(wall ratio, CPU ratio, verdict on each) of case name against case of."""
        w, c = rows[name] / rows[of], cpu[name] / cpu[of]
        fmt = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.2f}x")
        return fmt(w), fmt(c), (f"wall {verdict(w <= limit)}, CPU {verdict(c <= limit)}"
                                if limit else "")

    print(f"gobtfgen generate over {n} derived kernels ({dest}), jobs={args.jobs}, default "
          f"cache settings; load average before {load_before}, after {load_after}")
    print(f"{'case':<36}{'wall s':>9}{'ms/kernel':>10}{'CPU s':>9}{'wall':>9}{'CPU':>9}"
          "  vs / target")
    table = [
        ("cold (empty cache)", "cold", "xz floor", 1.15, False, "x xz floor, <= 1.15x"),
        ("relocations changed", "relocs changed", "cold", 0.10, True, "of cold, <= 10%"),
        ("code changed, relocations same", "code changed", "cold", 0, True, "of cold"),
        ("nothing changed", "nothing changed", "cold", 0.01, True, "of cold, <= 1%"),
        ("xz floor (liblzma, 2 processes)", "xz floor", "", 0, False, ""),
        (f"xz -dc processes (1/{args.baseline_every}, scaled)", "xz -dc floor", "cold", 0,
         False, "x cold"),
        (f"baseline tar+bpftool (1/{args.baseline_every}, scaled)", "baseline", "cold", 0,
         False, "x cold"),
    ]
    for label, name, of, limit, pct, what in table:
        w = c = v = ""
        if of:
            w, c, v = ratio(name, of, limit, pct)
        print(f"{label:<36}{rows[name]:>9.2f}{1000 * rows[name] / n:>10.2f}{cpu[name]:>9.1f}"
              f"{w:>9}{c:>9}  {what}{': ' + v if v else ''}")
    flat = rss_main <= 1.25 * small_main + 8 * 1024 and rss_child <= 1.25 * small_child + 8 * 1024
    print(f"peak RSS, {n} kernels: gobtfgen {rss_main / 1024:.1f} MiB, largest worker "
          f"{rss_child / 1024:.1f} MiB; {small} kernels: {small_main / 1024:.1f} MiB, "
          f"{small_child / 1024:.1f} MiB ({small_time:.1f} s)  flat in kernel count: "
          f"{verdict(flat)}")
    print(f"cache on disk: {disk / 1e9:.3f} GB after all runs ({disk_cold / 1e9:.3f} GB after "
          f"cold) = {disk / xz_bytes:.2f}x the archive's {xz_bytes / 1e9:.3f} GB of .tar.xz "
          f"(real files of the bases: {base_xz_bytes / 1e9:.3f} GB), "
          f"{100 * disk / raw_bytes:.1f}% of {raw_bytes / 1e9:.2f} GB raw BTF  "
          f"<= archive: {verdict(disk <= xz_bytes)}")
    # Where a cold kernel's CPU goes: the stages against the floor's xz, and what the whole run
    # spent per kernel beyond them (pool, messages, the main process, the kernel's own work).
    per = {stage: 1000 * t / staged_n for stage, t in stages.items()}
    floor_ms, cold_ms = 1000 * cpu["xz floor"] / n, 1000 * cpu["cold"] / n
    extra = sum(v for k, v in per.items() if k != "xz (liblzma)")
    print(f"CPU of a cold kernel by stage, ms (in one process, {staged_n} kernels, 1 in "
          f"{args.stages_every}; the floor's CPU is {floor_ms:.2f} ms a kernel, cold's "
          f"{cold_ms:.2f}):")
    for stage, ms in per.items():
        print(f"  {stage:<42}{ms:>7.2f}")
    xz_ms = per["xz (liblzma)"]
    print(f"  {'stages besides xz':<42}{extra:>7.2f}  ({100 * extra / xz_ms:.0f}% of xz)")
    print(f"  {'cold run beyond its stages':<42}{cold_ms - xz_ms - extra:>7.2f}  (pool, "
          "messages, main process, page faults)")
    print(f"  {'floor beyond its xz':<42}{floor_ms - xz_ms:>7.2f}  (its pool, page faults)")
    for case, summary in notes.items():
        print(f"  {case}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
