#!/usr/bin/env python3
"""A full-size archive for benchmarks: >= 4,300 kernels whose raw BTF all differ.

    python benchmarks/scale_archive.py --dest DIR [--count 4300] [--preset 6]

Derived from the real kernels at hand (../shared/btfhub-sample and the tests' Debian corpus,
52 in all): derived kernel i is base kernel i % 52 with one more type appended to its type
section, an anonymous empty struct of size i + 1. Appending keeps every type id, nothing refers
to the new type and no relocation can name it (it has no name), so each derived BTF is valid,
its CO-RE relocations resolve exactly as on its base, and its minimized BTF is the base's
(`--verify` minimizes the first derived copy of every base and compares). Every raw BTF, hence
every cache key, type index and xz file, is distinct.

Building 4,300 xz files at the archive's own preset (btfhub's files are `xz -6`: dict=8MiB)
would take hours of CPU; at `-0` the files would be larger than the real ones and the cache's
"at most the archive's bytes" target would be easier than it is. So each file is one xz stream
of five blocks: [tar header + BTF header] [type section] [the appended type] [string section]
[tar end]. The type and string sections are the same in every copy of a base: they are
compressed once per base at --preset (default 6, as btfhub), the three small blocks per file.
A derived file is then as large as its base's and decompresses as fast, and building is mostly
writing bytes (3.5 minutes for 4,300 kernels here). `--measure` checks on one kernel; here,
quiet machine, best of 7: real file 48.1 ms, derived 49.4 ms, the same tar at -6 47.8 ms
(1.00 MB, 1.65 s to compress), at -0 56.3 ms (1.20 MB, 0.17 s): the preset is not free for
decompression either (-0 is 17% slower), so -0 files would skew the floor and the disk target.

Caveat for every figure taken on it: derived kernels share far more across kernels than the
real archive does (83 copies of each base, differing in 12 bytes), so a cross-kernel dedup of
any kind (content-defined chunks, a shared dictionary, patch-from) would look much better here
than on btfhub. gobtfgen's cache compresses each kernel on its own, which this does not flatter.

The archive is built once into --dest (a temporary name, renamed when whole) and reused when
its SCALE.json says it has the same bases, count and preset. It needs about the bases' .tar.xz
bytes times the copies; the script says how much before writing and refuses when the disk has
less free (plus a 2 GiB reserve).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gobtfgen.archive import ARCHES, SUFFIX, read_kernel_btf, scan_archive  # noqa: E402
from gobtfgen.btf import parse_header  # noqa: E402

FORMAT = 1  # of SCALE.json and the derivation; bump when either changes
RESERVE = 2 << 30
STRUCT_KIND = 4
CHECK_CRC32 = 1  # xz stream flag: each block's check is a CRC32 of its uncompressed bytes


@dataclass(frozen=True)
class Base:
    path: Path  # the real .btf.tar.xz
    distro: str
    version: str
    arch: str
    release: str


def bases() -> list[Base]:
    """The real kernels to derive from: the sample (when present) and the tests' corpus."""
    from benchmarks.archives import SAMPLE
    from tests import corpus

    roots = [SAMPLE] if SAMPLE.is_dir() else []
    try:
        roots.append(corpus.build_archive())
    except corpus.CorpusError as exc:
        if not roots:
            sys.exit(f"no btfhub sample ({SAMPLE}) and no kernel corpus ({exc}): run "
                     "scripts/setup")
    found = []
    for root in roots:
        kernels, _ = scan_archive(root, ARCHES)
        found += [Base(path=k.path, distro=k.distro, version=k.version, arch=k.arch,
                       release=k.release) for k in kernels]
    return sorted(found, key=lambda b: str(b.path))


# ---- xz, one stream of several blocks ------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _dict_prop(dict_size: int) -> int:
    # LZMA2's dictionary-size byte: sizes 2^(n/2+12) and 3*2^(n/2+11); the smallest that fits.
    for prop in range(41):
        size = (2 | (prop & 1)) << (prop // 2 + 11)
        if size >= dict_size:
            return prop
    return 40


@dataclass(frozen=True)
class Block:
    """One xz block: its header, LZMA2 data and check, ready to concatenate."""

    data: bytes  # block header + compressed data + padding + CRC32
    unpadded: int  # the xz index's "unpadded size"
    size: int  # uncompressed bytes


def xz_block(payload: bytes, preset: int) -> Block:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset}]
    comp = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters)
    # The dictionary size the preset uses (xz's presets: 256 KiB .. 64 MiB).
    size = {0: 256 << 10, 1: 1 << 20, 2: 2 << 20, 3: 4 << 20, 4: 4 << 20, 5: 8 << 20,
            6: 8 << 20, 7: 16 << 20, 8: 32 << 20, 9: 64 << 20}[preset]
    # Block header: size byte, flags (one filter, no size fields), filter flags of LZMA2
    # (id 0x21, one property byte), padding to a multiple of 4, CRC32.
    body = bytes([0x00, 0x21, 0x01, _dict_prop(size)])
    head_len = (1 + len(body) + 4 + 3) // 4 * 4
    head = bytes([head_len // 4 - 1]) + body
    head += b"\0" * (head_len - 4 - len(head))
    head += struct.pack("<I", zlib.crc32(head))
    pad = b"\0" * (-len(comp) % 4)
    check = struct.pack("<I", zlib.crc32(payload))
    return Block(data=head + comp + pad + check, unpadded=len(head) + len(comp) + len(check),
                 size=len(payload))


def xz_stream(blocks: list[Block]) -> bytes:
    flags = bytes([0x00, CHECK_CRC32])
    header = b"\xfd7zXZ\0" + flags + struct.pack("<I", zlib.crc32(flags))
    index = b"\0" + _varint(len(blocks))
    for b in blocks:
        index += _varint(b.unpadded) + _varint(b.size)
    index += b"\0" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1)
    footer = struct.pack("<I", zlib.crc32(backward + flags)) + backward + flags + b"YZ"
    return header + b"".join(b.data for b in blocks) + index + footer


# ---- derivation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    base: Base
    btf_header: bytes  # the base's BTF header (hdr_len bytes)
    order: str
    type_off: int
    type_len: int
    str_off: int
    str_len: int
    types: Block
    strings: Block
    raw_len: int
    xz_len: int


def prepare(base: Base, preset: int) -> Prepared:
    raw = read_kernel_btf(base.path)
    h = parse_header(raw)
    if h.type_off != 0 or h.str_off != h.type_len or h.hdr_len + h.str_off + h.str_len != len(raw):
        sys.exit(f"{base.path}: its BTF sections are not laid out as header, types, strings "
                 "back to back; leave it out of the bases")
    if h.hdr_len > 24 and any(raw[24:h.hdr_len]):
        sys.exit(f"{base.path}: a {h.hdr_len}-byte BTF header with more sections; leave it out")
    order = "<" if h.little_endian else ">"
    types = raw[h.hdr_len:h.hdr_len + h.type_len]
    strings = raw[h.hdr_len + h.str_off:]
    return Prepared(base=base, btf_header=raw[:h.hdr_len], order=order, type_off=h.type_off,
                    type_len=h.type_len, str_off=h.str_off, str_len=h.str_len,
                    types=xz_block(types, preset), strings=xz_block(strings, preset),
                    raw_len=len(raw), xz_len=base.path.stat().st_size)


def derived_release(p: Prepared, i: int) -> str:
    return f"{p.base.release}-gbd{i:05}"


def derived_btf_parts(p: Prepared, i: int) -> tuple[bytes, bytes]:
    """(new header, appended type) of derived kernel i."""
    extra = struct.pack(p.order + "III", 0, STRUCT_KIND << 24, i + 1)  # anonymous, vlen 0
    head = bytearray(p.btf_header)
    struct.pack_into(p.order + "III", head, 8, p.type_off, p.type_len + len(extra),
                     p.str_off + len(extra))
    return bytes(head), extra


def derived_file(p: Prepared, i: int, preset: int) -> tuple[str, bytes]:
    release = derived_release(p, i)
    head, extra = derived_btf_parts(p, i)
    size = len(head) + p.type_len + len(extra) + p.str_len
    info = tarfile.TarInfo(f"{release}.btf")
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar_head = info.tobuf(format=tarfile.GNU_FORMAT)
    total = len(tar_head) + size
    tail = b"\0" * (-size % 512) + b"\0" * 1024
    total += len(tail)
    tail += b"\0" * (-total % tarfile.RECORDSIZE)
    blocks = [xz_block(tar_head + head, preset), p.types, xz_block(extra, preset), p.strings,
              xz_block(tail, preset)]
    return release, xz_stream(blocks)


def derived_raw(p: Prepared, i: int) -> bytes:
    """The raw BTF of derived kernel i, built from the base's file (for checks)."""
    raw = read_kernel_btf(p.base.path)
    head, extra = derived_btf_parts(p, i)
    return head + raw[len(head):len(head) + p.type_len] + extra + raw[len(head) + p.type_len:]


# ---- the archive ------------------------------------------------------------------------------

def _signature(found: list[Base], count: int, preset: int) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{count}\0{preset}\0".encode())
    for b in found:
        st = b.path.stat()
        h.update(f"{b.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def estimate(found: list[Base], count: int) -> int:
    """Bytes the archive will take: each base's .tar.xz size per copy, plus file slack."""
    sizes = [b.path.stat().st_size for b in found]
    return sum(sizes[i % len(sizes)] + 4096 for i in range(count))


def build(dest: Path, count: int = 4300, preset: int = 6, *, say: bool = True) -> Path:
    """The archive at dest, built when it is missing or was built from other inputs."""
    found = bases()
    signature = _signature(found, count, preset)
    record = dest / "SCALE.json"
    try:
        if json.loads(record.read_text()).get("signature") == signature:
            if say:
                print(f"scale archive: reusing {dest} ({count} kernels)", file=sys.stderr)
            return dest
    except (OSError, ValueError):
        pass
    need = estimate(found, count)
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    print(f"scale archive: {count} kernels derived from {len(found)} real ones need about "
          f"{need / 1e9:.2f} GB in {dest.parent} ({free / 1e9:.1f} GB free)", file=sys.stderr)
    if free < need + RESERVE:
        sys.exit(f"scale archive: not enough disk in {dest.parent}: {need / 1e9:.2f} GB needed "
                 f"plus a {RESERVE >> 30} GiB reserve, {free / 1e9:.1f} GB free; free space, "
                 "pass --dest on a larger disk or a smaller --count")
    tmp = dest.with_name(dest.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    start = time.monotonic()
    prepared = []
    for n, b in enumerate(found, 1):
        prepared.append(prepare(b, preset))
        if say:
            print(f"\rscale archive: compressed base {n}/{len(found)}", end="", file=sys.stderr)
    kernels = []
    for i in range(count):
        p = prepared[i % len(prepared)]
        release, blob = derived_file(p, i, preset)
        rel = Path(p.base.distro) / p.base.version / p.base.arch / f"{release}{SUFFIX}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(blob)
        kernels.append({"path": str(rel), "base": str(p.base.path), "xz_bytes": len(blob),
                        "base_xz_bytes": p.xz_len, "raw_bytes": p.raw_len + 12})
        if say and (i % 100 == 99 or i == count - 1):
            print(f"\rscale archive: wrote {i + 1}/{count} kernels", end="", file=sys.stderr)
    if say:
        print(file=sys.stderr)
    doc = {"signature": signature, "count": count, "preset": preset, "bases": len(found),
           "xz_bytes": sum(k["xz_bytes"] for k in kernels),
           "raw_bytes": sum(k["raw_bytes"] for k in kernels),
           "seconds": round(time.monotonic() - start, 1), "kernels": kernels}
    (tmp / "SCALE.json").write_text(json.dumps(doc, indent=0) + "\n")
    os.replace(tmp, dest)
    if say:
        print(f"scale archive: {count} kernels, {doc['xz_bytes'] / 1e9:.2f} GB of .tar.xz "
              f"({doc['raw_bytes'] / 1e9:.2f} GB raw BTF) in {doc['seconds']} s", file=sys.stderr)
    return dest


def record_of(dest: Path) -> dict[str, object]:
    doc = json.loads((dest / "SCALE.json").read_text())
    assert isinstance(doc, dict)
    return doc


def subset(dest: Path, n: int, into: Path) -> Path:
    """A view of the first n kernels of the archive (every base before any repeats), as
    symlinks in into."""
    doc = record_of(dest)
    kernels = doc["kernels"]
    assert isinstance(kernels, list)
    if n > len(kernels):
        sys.exit(f"--kernels {n}: the archive in {dest} has {len(kernels)}; rebuild it with "
                 f"a larger --count")
    shutil.rmtree(into, ignore_errors=True)
    for k in kernels[:n]:
        link = into / k["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(dest / k["path"], link)
    return into


# ---- checks ------------------------------------------------------------------------------------

def verify(dest: Path) -> None:
    """Each base's first derived copy: the file inflates to the expected raw BTF, and the
    built-in minimizer gives the base's result for the benchmark object."""
    import tempfile

    from benchmarks.bench_archive_scale import compile_variants
    from gobtfgen.btf.ext import parse_object
    from gobtfgen.minimize.python import minimize_btf

    doc = record_of(dest)
    kernels = doc["kernels"]
    assert isinstance(kernels, list)
    with tempfile.TemporaryDirectory() as tmp:
        objs = [parse_object(p) for p in compile_variants(Path(tmp)).values()]
        seen = set()
        for i, k in enumerate(kernels):
            if k["base"] in seen:
                continue
            seen.add(k["base"])
            derived = read_kernel_btf(dest / k["path"])
            base = read_kernel_btf(Path(k["base"]))
            parse_header(derived)
            assert len(derived) == len(base) + 12, k["path"]
            for obj in objs:
                a = minimize_btf(base, [obj], compat=False)
                b = minimize_btf(derived, [obj], compat=False)
                if a != b:
                    sys.exit(f"{k['path']}: minimized BTF differs from its base's "
                             f"({k['base']}) for {obj.path.name}")
            print(f"verified {i + 1:>5} {k['path']}", file=sys.stderr)


def measure(dest: Path) -> None:
    """xz decompression of one base: its real file, its derived file, and the same tar
    recompressed at presets 0 and 6 (is build speed a reason to pick a preset?)."""
    doc = record_of(dest)
    kernels = doc["kernels"]
    assert isinstance(kernels, list)
    k = kernels[0]
    real = Path(k["base"]).read_bytes()
    tar_bytes = lzma.decompress(real)

    def best(fn, n: int = 7) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    rows = [("real file", real), ("derived file", (dest / k["path"]).read_bytes())]
    for preset in (0, 6):
        t = time.perf_counter()
        blob = lzma.compress(tar_bytes, preset=preset)
        rows.append((f"xz -{preset} ({time.perf_counter() - t:.2f} s to compress)", blob))
    print(f"xz decompression of {Path(k['base']).name} ({len(tar_bytes) / 1e6:.2f} MB tar), "
          "best of 7:")
    for name, blob in rows:
        ms = 1000 * best(lambda b=blob: lzma.decompress(b))
        print(f"  {name:<34} {len(blob) / 1e6:7.3f} MB {ms:7.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, required=True,
                    help="where the archive goes (keep it outside the repository)")
    ap.add_argument("--count", type=int, default=4300)
    ap.add_argument("--preset", type=int, default=6, choices=range(10),
                    help="xz preset of the shared blocks (btfhub's files are -6)")
    ap.add_argument("--verify", action="store_true",
                    help="check each base's first derived copy (raw BTF, minimized result)")
    ap.add_argument("--measure", action="store_true",
                    help="time xz decompression of one kernel: real, derived, -0 and -6")
    args = ap.parse_args()
    build(args.dest, args.count, args.preset)
    if args.verify:
        verify(args.dest)
    if args.measure:
        measure(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
