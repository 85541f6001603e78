"""`--format tar.gz`: min_core_btfs.tar.gz with `./<id>/<version>/<arch>/<release>.btf`
members, the exact paths bcc's libbpf-tools and eunomia's bpf-compatible (C and
bpf-compatible-rs) loaders build, so they work unchanged."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping

from gobtfgen import render
from gobtfgen.errors import Level, Problem
from gobtfgen.targets import Rendered, Target, TargetInput

TARGZ_FILE = "min_core_btfs.tar.gz"
# ustar keeps 100 bytes of name in the field bcc's loader compares; longer names would go to
# the prefix field, which those loaders never read.
_USTAR_NAME = 100


def targz(entries: Mapping[str, bytes]) -> tuple[bytes, list[Problem]]:
    """min_core_btfs.tar.gz of {key: minimized BTF}: `./<key>.btf` members, sorted, with no
    time, owner or host in them (same input, same bytes)."""
    import tarfile  # here: `generate` without --format tar.gz never pays for it

    problems: list[Problem] = []
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in sorted(entries, key=lambda k: k.encode()):
            name = f"./{key}.btf"
            if len(name.encode()) > _USTAR_NAME:
                problems.append(Problem(
                    level=Level.WARNING, subject=key,
                    message=f"tar member name is {len(name.encode())} bytes: bcc's and "
                            f"bpf-compatible's loaders only read {_USTAR_NAME}, left out of "
                            f"{TARGZ_FILE}"))
                continue
            info = tarfile.TarInfo(name)
            info.size = len(entries[key])
            info.mode = 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(entries[key]))
    return gzip_with_mark(raw.getvalue()), problems


def gzip_with_mark(data: bytes) -> bytes:
    """gzip (RFC 1952) with mtime 0 and gobtfgen's mark as the header comment, so the file says
    who made it and gobtfgen's ownership check recognizes it (its first line holds the mark)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = comp.compress(data) + comp.flush()
    flg_fcomment = 0x10
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flg_fcomment, 0, 2, 3)
    comment = f"{render.GENERATED_MARK}\0".encode("latin-1")
    return header + comment + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _render(inp: TargetInput) -> Rendered:
    data, problems = targz(inp.btfs)
    return Rendered(files={TARGZ_FILE: data}, problems=tuple(problems))


TARGET = Target(name="tar.gz", templates=(), render=_render)
