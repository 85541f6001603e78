#!/usr/bin/env python3
"""Benchmark the generated Go runtime: the native path and the embedded path with payloads of
50 and 2000 kernels.

    python benchmarks/bench_go_runtime.py [--benchtime 2s] [--count 3] [--sizes 50,2000]

For each payload size it renders the generated package into a temporary module (real
cilium/ebpf, tests/gomod.py), embeds an x86_64/arm64 payload for this machine and runs the Go
benchmarks of tests/gotest/btfgen_bench_test.go:

  Native         FindBTF on a kernel with /sys/kernel/btf/vmlinux (one getenv, one stat)
  EmbeddedCold   the first FindBTF of a process without native BTF: parse the payload index,
                 look the kernel up (two distro keys tried), inflate one chunk, load the spec
  EmbeddedWarm   later LookupBTF calls (index already parsed)
  FindBTFCold    EmbeddedCold through the public FindBTF, with os-release and the kernel
                 release read from files as on a real host

Blobs are real minimized BTFs (bpftool gen min_core_btf of the test CO-RE objects against this
kernel and the btfhub sample kernels) when clang and bpftool are installed, each made unique
with an unreferenced string so no two kernels dedup; else synthetic BTFs of the same size.
Targets (issue 3): native < 50 us; embedded < 5 ms and < 2 MB allocated at 2000 kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gobtfgen import keys, pack, render  # noqa: E402
from gobtfgen.btf import STRUCT  # noqa: E402
from gobtfgen.targets import go  # noqa: E402
from tests.gomod import find_go, make_module, run_go  # noqa: E402
from tests.test_go_runtime import copy_go_tests, render_package  # noqa: E402
from tests.tinybtf import tiny_btf  # noqa: E402

SAMPLE = REPO.parent / "shared" / "btfhub-sample"
TARGETS = {"Native": (50_000, None), "EmbeddedCold": (5_000_000, 2 << 20),
           "FindBTFCold": (5_000_000, 2 << 20)}
_LINE = re.compile(r"^Benchmark(\w+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op"
                   r"\s+(\d+) allocs/op", re.M)


def real_blobs(arch: str, tmp: Path) -> list[bytes]:
    """Minimized BTFs of the test objects against every kernel at hand (may be empty)."""
    if not (shutil.which("clang") and shutil.which("bpftool")):
        return []
    from gobtfgen.archive import read_kernel_btf
    from tests.bpfobjs import build_objects

    objs = build_objects(tmp / "objs")
    objects = [str(objs[n]) for n in ("tracer", "net", "types", "fields")]
    lab3 = REPO / "examples" / "lab3" / f"execsnoop_{'x86' if arch == 'x86_64' else arch}_bpfel.o"
    if lab3.exists():
        objects.append(str(lab3))
    kernels: list[Path] = []
    if Path("/sys/kernel/btf/vmlinux").exists() and keys.btfhub_arch(
            os.uname().machine) == arch:
        kernels.append(Path("/sys/kernel/btf/vmlinux"))
    for i, tar in enumerate(sorted(SAMPLE.glob(f"*/*/{arch}/*.btf.tar.xz"))):
        raw = tmp / f"k{i}.btf"
        raw.write_bytes(read_kernel_btf(tar))
        kernels.append(raw)
    blobs = []
    for i, kernel in enumerate(kernels):
        out = tmp / f"min{i}.btf"
        proc = subprocess.run(["bpftool", "gen", "min_core_btf", str(kernel), str(out), *objects],
                              capture_output=True)
        if proc.returncode == 0:
            blobs.append(out.read_bytes())
    return blobs


def bench_blobs(arch: str, tmp: Path) -> list[bytes]:
    """real_blobs, or synthetic ones where clang or bpftool is missing; says which."""
    bases = real_blobs(arch, tmp)
    if bases:
        sizes = sorted(len(b) for b in bases)
        print(f"blobs: {len(bases)} real minimized BTFs, {sizes[0]}..{sizes[-1]} bytes")
        return bases
    bases = [tiny_btf(f"bench{i}", padding=700) for i in range(8)]
    print(f"blobs: synthetic, {len(bases[0])} bytes (clang or bpftool missing)")
    return bases


def unique(blob: bytes, n: int) -> bytes:
    """Kernel n's variant of a blob: its three biggest structs grow and one member moves, as a
    kernel build of another config or release moves them, so no two kernels dedup and each
    brings new type nodes (payload version 2 shares everything else). A blob not in
    bpftool's layout gets one more unreferenced string instead (the payload stores it whole)."""
    types = pack.parse_types(blob)
    if types is None:
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from("<HBBIIIII", blob)
        extra = b"bench_%06d\0" % n
        header = struct.pack("<HBBIIIII", magic, version, flags, hdr_len, type_off, type_len,
                             str_off, str_len + len(extra))
        return header + blob[24:] + extra
    composite = sorted((i for i, t in enumerate(types) if (t.cells[1] >> 24) & 0x1F == STRUCT
                        and t.cells[1] & 0xFFFF), key=lambda i: -(types[i].cells[1] & 0xFFFF))
    for j, i in enumerate(composite[:3]):
        cells = list(types[i].cells)
        cells[2] += 8 * (n + 1) + j  # bytes: room for the member moved below
        cells[-1] += 8 * ((n * (j + 1)) % 16)  # the last member's bit offset
        types[i] = dataclasses.replace(types[i], cells=tuple(cells))
    return pack.build_btf(types)


def payload_entries(n: int, arch: str, bases: list[bytes]) -> dict[str, bytes]:
    """n kernels spread over the distros btfhub carries, with realistic key shapes."""
    suffix = "x86_64" if arch == "x86_64" else "aarch64"
    shapes = [("ubuntu", "18.04", "4.15.0-{i}-generic"), ("ubuntu", "20.04", "5.4.0-{i}-aws"),
              ("centos", "7", "3.10.0-{i}.el7." + suffix),
              ("rhel", "8", "4.18.0-{i}.el8." + suffix),
              ("ol", "7", "4.14.35-{i}.el7uek." + suffix),
              ("amzn", "2", "4.14.{i}-1.amzn2." + suffix),
              ("debian", "10", "4.19.0-{i}-amd64"), ("sles", "15.3", "5.3.18-{i}-default"),
              ("fedora", "33", "5.8.{i}-301.fc33." + suffix)]
    out = {}
    for i in range(n):
        os_id, version, release = shapes[i % len(shapes)]
        key = keys.format_key(os_id, version, arch, release.format(i=i))
        out[key] = unique(bases[i % len(bases)], i)
    return out


def run_size(n: int, arch: str, bases: list[bytes], args: argparse.Namespace,
             tmp: Path) -> dict[str, tuple[float, int, int]]:
    mod = tmp / f"mod{n}"
    entries = payload_entries(n, arch, bases)
    files: dict[str, str | bytes] = {}
    for a in render.ARCHES:
        payload, stats = pack.pack(a, entries if a == arch else {})
        files[go.payload_file(a)] = payload
        if a == arch:
            old = pack.pack(a, entries, version=pack.LEGACY_VERSION)[1]
            print(f"  {n} kernels: payload {stats.payload_bytes / 1024:.0f} KiB "
                  f"(version 1: {old.payload_bytes / 1024:.0f} KiB; "
                  f"{stats.raw_bytes / 1024:.0f} KiB of BTF, {stats.nodes} nodes, "
                  f"{stats.raw_kernels} kernels stored whole)", flush=True)
    files["testdata/lookup.json"] = "{}"
    make_module(mod, files=files)
    render_package(mod)
    copy_go_tests(mod)
    proc = run_go(["test", "-run=^$", "-bench=.", "-benchmem", f"-benchtime={args.benchtime}",
                   f"-count={args.count}", "."], cwd=mod, timeout=1200)
    results: dict[str, list[tuple[float, int, int]]] = {}
    for name, ns, b, allocs in _LINE.findall(proc.stdout):
        results.setdefault(name, []).append((float(ns), int(b), int(allocs)))
    # The median run of each benchmark.
    return {name: sorted(runs)[len(runs) // 2] for name, runs in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchtime", default="1s")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--sizes", default="50,2000")
    args = parser.parse_args()
    if find_go() is None:
        print("go not found: install Go to run this benchmark", file=sys.stderr)
        return 2
    arch = keys.btfhub_arch(os.uname().machine) or "x86_64"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bases = bench_blobs(arch, tmp)
        failed = False
        rows: list[tuple[int, str, float, int, int, str]] = []
        for n in (int(s) for s in args.sizes.split(",")):
            for name, (ns, b, allocs) in sorted(run_size(n, arch, bases, args, tmp).items()):
                if name == "Native" and any(r[1] == "Native" for r in rows):
                    continue  # the native path does not depend on the payload
                verdict = ""
                if name in TARGETS and (name == "Native" or n >= 2000):
                    max_ns, max_b = TARGETS[name]
                    ok = ns <= max_ns and (max_b is None or b <= max_b)
                    verdict = "meets target" if ok else "MISSES TARGET"
                    failed |= not ok
                rows.append((n, name, ns, b, allocs, verdict))
    print(f"\n{'kernels':>8}  {'benchmark':<14} {'ns/op':>12} {'B/op':>10} {'allocs':>7}")
    for n, name, ns, b, allocs, verdict in rows:
        shown = "-" if name == "Native" else str(n)
        print(f"{shown:>8}  {name:<14} {ns:>12,.0f} {b:>10,} {allocs:>7}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
