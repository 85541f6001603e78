#!/usr/bin/env python3
"""Payload size against what lab3 embeds (issue 17), plus the runtime cost of one lookup.

    python benchmarks/bench_payload.py [--archive DIR] [--skip-runtime]

Compiles eight tracer-style CO-RE objects with clang (tests/bpf: tracer, execsnoop, net,
fields; benchmarks/bpf: opensnoop, tcpconnect, biolatency, runqlat), runs `gobtfgen generate`
over the btfhub sample archive (the tests' kernel corpus when the sample is absent) and prints
per arch: the payload of the key-order packer (gobtfgen before issue 17), of the similarity-order
packer (the default now), and the sum of `bpftool gen min_core_btf` outputs for the same kernels
and objects (one raw file per kernel: what lab3 and Inspektor Gadget embed), with the ratios.
Target: payload <= 2% of the bpftool-minimized bytes. Then it runs bench_go_runtime.py at
2,000 kernels (pick-and-rebuild time and heap; target 5 ms and 2 MB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gobtfgen.archive import read_kernel_btf  # noqa: E402
from gobtfgen.pack import pack, unpack  # noqa: E402
from gobtfgen.targets import go  # noqa: E402

TEST_OBJECTS = ("tracer", "execsnoop", "net", "fields")
BENCH_OBJECTS = ("opensnoop", "tcpconnect", "biolatency", "runqlat")
TARGET = 0.02


def compile_objects(clang: str, out: Path) -> list[Path]:
    sources = [REPO / "tests" / "bpf" / f"{n}.c" for n in TEST_OBJECTS]
    sources += [REPO / "benchmarks" / "bpf" / f"{n}.c" for n in BENCH_OBJECTS]
    objects = []
    for src in sources:
        obj = out / f"{src.stem}.o"
        subprocess.run([clang, "-g", "-O2", "-target", "bpfel", "-D__TARGET_ARCH_x86",
                        "-I", str(REPO / "tests" / "bpf"), "-c", str(src), "-o", str(obj)],
                       check=True)
        objects.append(obj)
    return objects


def bpftool_raw(bpftool: str, archive: Path, keys: list[str], objects: list[Path],
                tmp: Path) -> tuple[int, int]:
    """(sum of bpftool-minimized bytes, kernels bpftool minimized) for these kernels."""
    total = done = 0
    kernel, out = tmp / "kernel.btf", tmp / "min.btf"
    for key in keys:
        kernel.write_bytes(read_kernel_btf(archive / f"{key}.btf.tar.xz"))
        proc = subprocess.run([bpftool, "gen", "min_core_btf", str(kernel), str(out),
                               *map(str, objects)], capture_output=True)
        if proc.returncode == 0:
            total += out.stat().st_size
            done += 1
    return total, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, help="btfhub-layout archive (default: sample, "
                        "else the tests' kernel corpus)")
    parser.add_argument("--skip-runtime", action="store_true",
                        help="do not run bench_go_runtime.py at 2,000 kernels")
    args = parser.parse_args()
    clang, bpftool = shutil.which("clang"), shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not clang or not Path(bpftool).exists() and not shutil.which(bpftool):
        print("clang and bpftool are needed: run scripts/setup", file=sys.stderr)
        return 2
    archive = args.archive
    if archive is None:
        from benchmarks.archives import default_archive

        archive = default_archive()
    failed = False
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "objs").mkdir()
        objects = compile_objects(clang, tmp / "objs")
        cmd = [sys.executable, "-m", "gobtfgen", "generate", "--archive", str(archive),
               "--output-dir", str(tmp / "out"), "--pkg", "main", "--cache-dir",
               str(tmp / "cache"), "--quiet"]
        for obj in objects:
            cmd += ["--object", str(obj)]
        subprocess.run(cmd, check=True, cwd=REPO)
        print(f"{len(objects)} objects over {archive}")
        print(f"{'arch':<8} {'kernels':>7} {'bpftool raw':>11} {'key order':>15} "
              f"{'similar order':>15}")
        for arch in ("x86_64", "arm64"):
            payload = tmp / "out" / go.payload_file(arch)
            if not payload.exists():
                continue
            _, entries = unpack(payload.read_bytes())
            if not entries:
                continue
            raw, done = bpftool_raw(bpftool, archive, sorted(entries), objects, tmp)
            old = len(pack(arch, entries, order="key")[0])
            new = len(pack(arch, entries, order="similar")[0])
            verdict = "meets target" if new <= TARGET * raw else "MISSES TARGET (2%)"
            failed |= new > TARGET * raw
            print(f"{arch:<8} {len(entries):>7} {raw:>11,} {old:>7,} {old / raw:>6.2%} "
                  f"{new:>7,} {new / raw:>6.2%}  {verdict}"
                  + ("" if done == len(entries) else f" (bpftool failed on "
                                                      f"{len(entries) - done} kernels)"))
    if not args.skip_runtime:
        print("\nruntime pick-and-rebuild (bench_go_runtime.py --sizes 2000):", flush=True)
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_go_runtime.py"),
                               "--sizes", "2000"])
        failed |= proc.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
