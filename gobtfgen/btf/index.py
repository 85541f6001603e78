"""A kernel's TypeIndex on disk, so a kernel is framed once, not once per run.

Framing every record of a kernel's type section (gobtfgen.btf.index_types) is most of what
the built-in minimizer spends on a kernel; the result depends only on the kernel, so the cache
keeps it next to the kernel's raw BTF (raw/<sha>.idx) and a later run whose relocations
changed reads it back in a fraction of a millisecond.

Format (little-endian u32 words after an 8-byte magic):
    magic "GBTFIX\\0\\4", type_len, count, named_count, crc32,
    then one zlib stream (level 1) of the byte planes of
    offsets[count]   (offsets[0] = 0 is void),
    named_at[named_count]
(all first bytes of the u32 words, then all second bytes, ...: the offsets grow slowly, so the
upper planes are nearly constant and the file is a fifth of the arrays or less, 40-130 KB for a
kernel instead of 0.3-0.6 MB; splitting and joining the planes are slice copies in C.)
type_len (bytes of the type section) ties the index to its blob and crc32 covers both arrays,
so a damaged or truncated file is not used; one of another kernel of the same size is caught by
BTF's sampled framing check (BTF._frames). Either way the kernel is framed again and the file
rewritten (store(), atomically): a bad index costs time, never a wrong answer.
"""

from __future__ import annotations

import os
import struct
import sys

from gobtfgen.btf import BTF, BTFError, TypeIndex, parse_header
from gobtfgen.btf.native import native
from gobtfgen.fileio import write_atomic

# zlib and array are imported where they are used: `gobtfgen minimize` imports this module
# in every process, and with the compiled framing (KEEP False) uses neither; array imports
# collections.abc (2-4 ms). typing.TYPE_CHECKING without importing typing (mypy reads it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from os import PathLike

MAGIC = b"GBTFIX\0\4"
# Kept only when the framing runs in Python. The compiled framing (gobtfgen/_native.c) frames a
# 100k-type kernel in about a millisecond: less than reading this file back (2 ms) and far
# less than writing it (2-7 ms, measured on the sample), so with it load() and store() do
# nothing and the cache holds no index files.
KEEP = native is None
_HEAD = struct.Struct("<IIII")


def _le_bytes(values: Sequence[int]) -> bytes:
    from array import array

    if isinstance(values, array) and values.typecode == "I":
        arr = values
    elif isinstance(values, memoryview) and values.format == "I":
        arr = array("I")
        arr.frombytes(values.cast("B"))  # the compiled framing's offsets
    else:
        arr = array("I")
        # fromlist: 40% faster than array("I", a_list) for a kernel's 100k offsets.
        arr.fromlist(values if isinstance(values, list) else list(values))
    if sys.byteorder != "little":
        arr = array("I", arr)
        arr.byteswap()
    return arr.tobytes()


def _planes(body: bytes) -> bytes:
    return b"".join(body[i::4] for i in range(4))


def _unplanes(planes: bytes) -> bytes:
    n = len(planes) // 4
    out = bytearray(len(planes))
    for i in range(4):
        out[i::4] = planes[i * n:(i + 1) * n]
    return bytes(out)


def encode(index: TypeIndex, type_len: int) -> bytes:
    import zlib

    body = _le_bytes(index.offsets) + _le_bytes(index.named_at)
    # zlib at level 1, not zstandard: on a 400 KB index it is smaller (75 KB against zstd 1's
    # 88 KB) and takes 2 ms, and zstandard's import (typing and its backend, ~15 ms) would be
    # most of a cold `gobtfgen minimize`.
    frame = zlib.compress(_planes(body), 1)
    return (MAGIC + _HEAD.pack(type_len, len(index.offsets), len(index.named_at),
                               zlib.crc32(body)) + frame)


def decode(blob: bytes, type_len: int) -> TypeIndex | None:
    """The index in blob if it is whole and belongs to a type section of type_len bytes.

    (BTF() then checks that the last offset frames the blob's last record.)
    """
    import zlib
    from array import array

    head = len(MAGIC) + _HEAD.size
    if len(blob) < head or not blob.startswith(MAGIC):
        return None
    t_len, count, named_count, crc = _HEAD.unpack_from(blob, len(MAGIC))
    size = 4 * (count + named_count)
    if t_len != type_len or count < 1:
        return None
    try:
        inflater = zlib.decompressobj()
        planes = inflater.decompress(memoryview(blob)[head:], size)
    except zlib.error:
        return None
    if inflater.unconsumed_tail or not inflater.eof:
        return None
    if len(planes) != size:
        return None
    body = _unplanes(planes)
    if zlib.crc32(body) != crc:
        return None
    arr = array("I")
    arr.frombytes(body)
    if sys.byteorder != "little":
        arr.byteswap()
    offsets = arr[:count]
    named_at = arr[count:]
    if offsets[0] != 0 or (count > 1 and offsets[1] != 0) or (count == 1 and type_len):
        return None
    return TypeIndex(offsets=offsets, named_at=named_at)


def load(path: str | PathLike[str] | None, kernel_data: bytes | memoryview) -> TypeIndex | None:
    """The index kept at path for this kernel blob, or None (no file, or not this blob's, or
    not kept: KEEP)."""
    if path is None or not KEEP:
        return None
    try:
        with open(path, "rb") as f:
            blob = f.read()
        header = parse_header(kernel_data)
    except (OSError, BTFError):
        return None  # no index yet, or a blob BTF() is about to reject with a better message
    index = decode(blob, header.type_len)
    if index is not None:
        try:  # noqa: SIM105 (contextlib costs `gobtfgen minimize` 1-2 ms to import)
            os.utime(path)  # used: the cache evicts it last
        except OSError:
            pass
    return index


def store(path: str | PathLike[str] | None, kernel: BTF) -> None:
    """Keep kernel's index at path unless it came from there. Best effort, like every cache
    write: a full or read-only cache costs the walk next time. Nothing when not KEEP."""
    if path is None or kernel.index_reused or not KEEP:
        return
    try:  # noqa: SIM105 (contextlib costs `gobtfgen minimize` 1-2 ms to import)
        write_atomic(path, encode(kernel.index, kernel.header.type_len))
    except OSError:
        pass
