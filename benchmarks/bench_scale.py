#!/usr/bin/env python3
"""Scale: generate over archives of 1000, 2000 and 5000 kernels built from the sample archive.

    python benchmarks/bench_scale.py [--sizes 1000,2000,5000] [--unique N] [--workdir DIR]

Each archive holds the sample kernels again and again under new release names (symlinks, so it
costs no disk). gobtfgen's cache is content-addressed, so after the first copy of each sample
kernel the others are cache hits by content: this measures the per-kernel cost of the pipeline
itself (scan, hash, cache, pack, manifest) and whether memory grows with the archive. With
--unique N it also builds N copies whose bytes differ (xz stream padding appended, which every
xz reader skips), so every kernel is inflated and minimized for real: that shows the time per
kernel of real work stays flat.

Each run is a fresh process with an empty cache; peak RSS is the gobtfgen process's own (its
VmHWM: see WRAPPER), and "largest child" the peak of its largest child process (a worker of the
built-in minimizer, or a bpftool run), each holding one kernel BTF at a time.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gobtfgen.archive import ARCHES, SUFFIX, scan_archive  # noqa: E402

# The gobtfgen process's own peak is VmHWM, not getrusage(RUSAGE_SELF).ru_maxrss: Linux carries
# ru_maxrss across exec, so a process started by a benchmark that had grown (building the
# archive, 145 MiB; reading its record) reported the benchmark's peak, not its own. VmHWM is the
# high-water mark of the address space exec made. The workers are forked, not exec'd, so
# RUSAGE_CHILDREN is their own peak (counting what they share with the parent, as RSS does); a
# child that gobtfgen execs (bpftool) starts at gobtfgen's peak, so for it that is a bound.
WRAPPER = ("import resource, sys\n"
           "from gobtfgen import cli\n"
           "code = cli.main(sys.argv[1:])\n"
           "with open('/proc/self/status') as f:\n"
           "    hwm = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))\n"
           "print('maxrss_kib', hwm,"
           " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
           "sys.exit(code)\n")


def build_archive(sample: Path, dest: Path, size: int, *, unique: bool) -> None:
    kernels, _ = scan_archive(sample, ARCHES)
    for i in range(size):
        k = kernels[i % len(kernels)]
        path = dest / k.distro / k.version / k.arch / f"{k.release}-s{i:05}{SUFFIX}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if unique:
            # xz "stream padding": NUL bytes in multiples of 4 after the stream are valid and
            # skipped by every reader, so the BTF is the same but the file's hash is not.
            path.write_bytes(k.path.read_bytes() + b"\0" * (4 * (i + 1)))
        else:
            os.symlink(k.path.resolve(), path)


def run(archive: Path, work: Path, obj: Path, minimizer: str
        ) -> tuple[float, tuple[int, int], str]:
    out, cache = work / "out", work / "cache"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, "generate", "--archive", str(archive),
                           "--object", str(obj), "--output-dir", str(out), "--cache-dir",
                           str(cache), "--minimizer", minimizer, "--pkg", "main"],
                          capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"generate failed:\n{done.stderr}")
    found = re.search(r"maxrss_kib (\d+) (\d+)", done.stderr)
    assert found is not None, done.stderr
    summary = next(line for line in done.stderr.splitlines() if " kernels: " in line)
    return elapsed, (int(found[1]), int(found[2])), summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", type=Path, default=None,
                    help="the kernels to repeat (default: the sample, else the test corpus)")
    ap.add_argument("--sizes", default="1000,2000,5000")
    ap.add_argument("--unique", type=int, default=0,
                    help="also run this many kernels with distinct bytes (real work each)")
    ap.add_argument("--minimizer", default="python", help="as gobtfgen generate")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.archive is None:
        from benchmarks.archives import default_archive

        args.archive = default_archive()
    work = Path(tempfile.mkdtemp(prefix="gobtfgen-scale-", dir=args.workdir))
    try:
        multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                                   text=True).stdout.strip()
        obj = work / "probe_bpfel.o"
        subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                        f"-I/usr/include/{multiarch}", "-c",
                        str(REPO / "tests/fixtures/probe.bpf.c"), "-o", str(obj)], check=True)
        rows = []
        plan = [(int(s), False) for s in args.sizes.split(",") if s]
        if args.unique:
            plan.append((args.unique, True))
        for size, unique in plan:
            archive = work / f"archive-{size}-{'u' if unique else 's'}"
            build_archive(args.archive, archive, size, unique=unique)
            elapsed, rss, summary = run(archive, work, obj, args.minimizer)
            rows.append((size, unique, elapsed, rss, summary))
            shutil.rmtree(archive)
        print(f"gobtfgen generate at scale (minimizer {args.minimizer}, jobs {os.cpu_count()})")
        print(f"{'kernels':>8} {'content':>9} {'seconds':>9} {'ms/kernel':>10} "
              f"{'peak RSS':>10} {'largest child':>14}")
        for size, unique, elapsed, (rss, child), _ in rows:
            print(f"{size:>8} {'distinct' if unique else 'repeated':>9} {elapsed:>9.2f} "
                  f"{1000 * elapsed / size:>10.2f} {rss / 1024:>7.1f} MiB "
                  f"{child / 1024:>10.1f} MiB")
        for size, _, _, _, summary in rows:
            print(f"  {size}: {summary.removeprefix('gobtfgen: ')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
