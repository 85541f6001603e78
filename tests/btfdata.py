"""Small, valid BTF blobs and btfhub-style files built by the tests themselves."""

from __future__ import annotations

import io
import lzma
import struct
import tarfile
from pathlib import Path


def tiny_btf(names: tuple[str, ...] = ("int",)) -> bytes:
    """A valid little-endian BTF with one 4-byte signed INT per name."""
    strings = b"\0"
    types = b""
    for name in names:
        off = len(strings)
        strings += name.encode() + b"\0"
        types += struct.pack("<III", off, 1 << 24, 4) + struct.pack("<I", (1 << 24) | 32)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def tar_xz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ)


def btfhub_file(release: str, btf: bytes) -> bytes:
    return tar_xz([(tarfile.TarInfo(f"{release}.btf"), btf)])


def add_kernel(archive: Path, key: str, btf: bytes | None = None, *,
               content: bytes | None = None) -> Path:
    """Write archive/<key>.btf.tar.xz (key = id/version/arch/release)."""
    path = archive / f"{key}.btf.tar.xz"
    path.parent.mkdir(parents=True, exist_ok=True)
    release = key.rsplit("/", 1)[1]
    path.write_bytes(content if content is not None else btfhub_file(release, btf or tiny_btf()))
    return path
