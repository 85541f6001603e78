#!/usr/bin/env python3
"""Payload size against what lab3 embeds (issue 17), plus the runtime cost of one lookup.

    python benchmarks/bench_payload.py [--archive DIR] [--skip-runtime]

Compiles eight tracer-style CO-RE objects with clang (tests/bpf: tracer, execsnoop, net,
fields; benchmarks/bpf: opensnoop, tcpconnect, biolatency, runqlat), runs `gobtfgen generate`
over the btfhub sample archive (the tests' kernel corpus when the sample is absent) and prints
per arch: the sum of `bpftool gen min_core_btf` outputs for the same kernels and objects (one
raw file per kernel: what lab3 and Inspektor Gadget embed), the payload in the old format
(version 1, whole minimized BTFs in similarity order) and in the new one (version 2, type
nodes shared across kernels), with the ratios, and the Go payload file as shipped: the new
payload followed by the full-BTF trailer of BTFOptions.PreferEmbedded, in the old trailer
format (GBS1, key and whole sha256 per kernel) and the one gobtfgen writes (GBS2); then where
the new payload's bytes go. Target: payload <= 2% of the bpftool-minimized bytes (also checked
for the file as shipped). Then it runs bench_go_runtime.py at 2,000 kernels (pick-and-rebuild
time and heap; target 5 ms and 2 MB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gobtfgen.archive import read_kernel_btf  # noqa: E402
from gobtfgen.pack import LEGACY_VERSION, Payload2, pack, unpack  # noqa: E402
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


def _bpftool_one(bpftool: str, tar: Path, objects: list[Path], tmp: Path) -> int | None:
    """bpftool's minimized bytes for one archive kernel, None when bpftool fails on it."""
    kernel, out = tmp / f"kernel-{os.getpid()}.btf", tmp / f"min-{os.getpid()}.btf"
    kernel.write_bytes(read_kernel_btf(tar))
    proc = subprocess.run([bpftool, "gen", "min_core_btf", str(kernel), str(out),
                           *map(str, objects)], capture_output=True)
    return out.stat().st_size if proc.returncode == 0 else None


def bpftool_raw(bpftool: str, archive: Path, keys: list[str], objects: list[Path],
                tmp: Path) -> tuple[int, int]:
    """(sum of bpftool-minimized bytes, kernels bpftool minimized) for these kernels, in two
    worker processes (a full-size archive has thousands)."""
    from concurrent.futures import ProcessPoolExecutor

    tars = [archive / f"{key}.btf.tar.xz" for key in keys]
    with ProcessPoolExecutor(max_workers=2) as pool:
        sizes = list(pool.map(_bpftool_one, [bpftool] * len(tars), tars,
                              [objects] * len(tars), [tmp] * len(tars), chunksize=16))
    done = [s for s in sizes if s is not None]
    return sum(done), len(done)


def gbs1_trailer_len(keys: list[str]) -> int:
    """Bytes of the trailer gobtfgen wrote before GBS2: per kernel u16 key_len, the key, u64
    size and the 32-byte sha256; then u32 count, u32 body_len and "GBS1"."""
    return sum(2 + len(k.encode()) + 8 + 32 for k in keys) + 12


def breakdown(payload: bytes) -> list[tuple[str, int]]:
    """The parts of a version 2 payload, each deflated on its own (so they add up to about the
    payload, not exactly: the payload deflates some of them together)."""
    import struct
    import zlib

    def deflated(data: bytes) -> int:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return len(comp.compress(data) + comp.flush())

    clen = struct.unpack_from("<I", payload, 8)[0]
    index = zlib.decompress(payload[16:16 + clen], -15)
    x = Payload2(payload, 16 + clen, index)
    crcs = 4 * len(x.kernels)
    parts = [("header", 16),
             ("index: keys", deflated(x.index[x.entries_at:])),
             ("index: kernel lists (programs)",
              deflated(x.index[x.kernels_at:x.entries_at]) - crcs),
             ("index: kernel crc32s", crcs),
             ("index: shapes, groups, arch", deflated(x.index[:x.kernels_at]))]
    columns = ("strings", "names", "lits (info, sizes, offsets)", "types (references)", "raw")
    for g in range(len(x.groups)):
        for col, name in enumerate(columns):
            size = x.groups[g].lengths[col]
            if size:
                parts.append((f"group {g}: {name}", deflated(x._column(g, col).data)))
    return parts


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
        print(f"{'':<31}{'payload':^29}   {'Go file as shipped':^35}")
        print(f"{'arch':<8} {'kernels':>7} {'bpftool raw':>11}   {'old (v1)':>14} "
              f"{'new (v2)':>14}   {'v2 + GBS1 (old)':>17} {'v2 + GBS2 (new)':>17}")
        breakdowns = []
        for arch in ("x86_64", "arm64"):
            payload = tmp / "out" / go.payload_file(arch)
            if not payload.exists():
                continue
            shipped = payload.read_bytes()
            _, entries = unpack(shipped)
            if not entries:
                continue
            raw, done = bpftool_raw(bpftool, archive, sorted(entries), objects, tmp)
            old = len(pack(arch, entries, version=LEGACY_VERSION)[0])
            new_payload, stats = pack(arch, entries)
            new = len(new_payload)
            if not shipped.startswith(new_payload):
                raise SystemExit(f"{payload} does not start with the payload packed again here")
            trailer = len(shipped) - new
            if len(go.parse_fullsum_trailer(shipped)) != len(entries):
                raise SystemExit(f"{payload}: the trailer does not hold every kernel")
            gbs1 = new + gbs1_trailer_len(sorted(entries))
            failed |= max(new, len(shipped)) > TARGET * raw
            verdict = ("meets target" if len(shipped) <= TARGET * raw else
                       "payload meets target, file as shipped misses it" if new <= TARGET * raw
                       else "MISSES TARGET (2%)")
            print(f"{arch:<8} {len(entries):>7} {raw:>11,}   {old:>7,} {old / raw:>6.2%} "
                  f"{new:>7,} {new / raw:>6.2%}   {gbs1:>10,} {gbs1 / raw:>6.2%} "
                  f"{len(shipped):>10,} {len(shipped) / raw:>6.2%}  {verdict}"
                  + ("" if done == len(entries) else f" (bpftool failed on "
                                                      f"{len(entries) - done} kernels)"))
            print(f"{'':<8} trailer: GBS1 {gbs1 - new:,} bytes ({(gbs1 - new) / len(entries):.1f} "
                  f"a kernel), GBS2 {trailer:,} bytes ({trailer / len(entries):.1f} a kernel)")
            breakdowns.append((arch, stats, breakdown(new_payload)))
        for arch, stats, parts in breakdowns:
            print(f"\n{arch}: {stats.blobs} unique minimized BTFs ({stats.unique_bytes:,} bytes "
                  f"from gobtfgen's minimizer), {stats.nodes} type nodes, {stats.raw_kernels} "
                  "stored whole; where the new payload's bytes go (each part deflated alone):")
            for name, size in parts:
                print(f"  {name:<38} {size:>7,}")
    if not args.skip_runtime:
        print("\nruntime pick-and-rebuild (bench_go_runtime.py --sizes 2000):", flush=True)
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_go_runtime.py"),
                               "--sizes", "2000"])
        failed |= proc.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
