"""Dedup and compression: many minimized BTFs of one arch into one payload file.

The format is described in docs/payload-format.md; the Go reader lives in templates/btfgen.go.j2.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

MAGIC = b"GBTF"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")
MAX_INDEX_LEN = 64 << 20
# About 256 KiB of minimized BTF per chunk: a lookup inflates one chunk (well under a
# millisecond), while neighbouring kernels of one distro still share a DEFLATE window.
CHUNK_TARGET = 256 << 10


class PayloadError(ValueError):
    """A payload that does not follow docs/payload-format.md."""


@dataclass(frozen=True, kw_only=True)
class PackStats:
    entries: int
    blobs: int  # unique minimized BTFs
    raw_bytes: int  # sum of every entry's minimized BTF (what lab3 would embed)
    unique_bytes: int  # sum of unique blobs
    payload_bytes: int


def _deflate(data: bytes) -> bytes:
    # Raw DEFLATE (wbits -15): what Go's compress/flate reads with no zlib/gzip framing.
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return comp.compress(data) + comp.flush()


def pack(arch: str, entries: Mapping[str, bytes]) -> tuple[bytes, PackStats]:
    """Build the payload for one arch from {key: minimized BTF}. Same input, same bytes."""
    keys = sorted(entries, key=lambda k: k.encode())
    blob_index: dict[bytes, int] = {}  # sha256 -> blob number
    blobs: list[bytes] = []
    entry_blob: list[int] = []
    for key in keys:
        data = entries[key]
        digest = hashlib.sha256(data).digest()
        if digest not in blob_index:
            blob_index[digest] = len(blobs)
            blobs.append(data)
        entry_blob.append(blob_index[digest])

    chunks: list[bytes] = []  # inflated chunk contents
    blob_rows: list[tuple[int, int, int, int]] = []
    current = bytearray()
    for blob in blobs:
        if current and len(current) + len(blob) > CHUNK_TARGET:
            chunks.append(bytes(current))
            current = bytearray()
        blob_rows.append((len(chunks), len(current), len(blob), zlib.crc32(blob)))
        current += blob
    if current:
        chunks.append(bytes(current))

    data_area = bytearray()
    chunk_rows: list[tuple[int, int, int]] = []
    for chunk in chunks:
        compressed = _deflate(chunk)
        chunk_rows.append((len(data_area), len(compressed), len(chunk)))
        data_area += compressed

    index = bytearray()
    arch_b = arch.encode()
    index += struct.pack("<H", len(arch_b)) + arch_b
    index += struct.pack("<I", len(chunk_rows))
    for row in chunk_rows:
        index += struct.pack("<III", *row)
    index += struct.pack("<I", len(blob_rows))
    for brow in blob_rows:
        index += struct.pack("<IIII", *brow)
    index += struct.pack("<I", len(keys))
    for key, blob_no in zip(keys, entry_blob, strict=True):
        key_b = key.encode()
        index += struct.pack("<H", len(key_b)) + key_b + struct.pack("<I", blob_no)
    index_c = _deflate(bytes(index))
    payload = HEADER.pack(MAGIC, VERSION, 0, 0, len(index_c), len(index)) + index_c + data_area
    stats = PackStats(entries=len(keys), blobs=len(blobs),
                      raw_bytes=sum(len(entries[k]) for k in keys),
                      unique_bytes=sum(len(b) for b in blobs), payload_bytes=len(payload))
    return payload, stats


def is_payload(head: bytes) -> bool:
    return head[:4] == MAGIC


def unpack(payload: bytes) -> tuple[str, dict[str, bytes]]:
    """Read a payload back into (arch, {key: minimized BTF}); raises PayloadError."""
    if len(payload) < HEADER.size:
        raise PayloadError("payload shorter than its header")
    magic, version, _flags, _res, index_clen, index_len = HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise PayloadError("bad magic (not a gobtfgen payload)")
    if version != VERSION:
        raise PayloadError(f"payload format version {version}, this gobtfgen reads {VERSION}")
    if index_len > MAX_INDEX_LEN or HEADER.size + index_clen > len(payload):
        raise PayloadError("index length out of range")
    data_start = HEADER.size + index_clen
    try:
        index = zlib.decompress(payload[HEADER.size:data_start], -15)
    except zlib.error as exc:
        raise PayloadError(f"index does not inflate: {exc}") from None
    if len(index) != index_len:
        raise PayloadError("index length mismatch")
    pos = 0

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(index):
            raise PayloadError("index truncated")
        values = struct.unpack_from(fmt, index, pos)
        pos += size
        return values

    def take_bytes(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(index):
            raise PayloadError("index truncated")
        pos += n
        return index[pos - n:pos]

    def text(raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise PayloadError("a name in the index is not UTF-8") from None

    (arch_len,) = take("<H")
    arch = text(take_bytes(arch_len))
    (n_chunks,) = take("<I")
    chunks: list[bytes] = []
    for _ in range(n_chunks):
        off, clen, raw_len = take("<III")
        if data_start + off + clen > len(payload):
            raise PayloadError("chunk out of range")
        try:
            chunk = zlib.decompress(payload[data_start + off:data_start + off + clen], -15)
        except zlib.error as exc:
            raise PayloadError(f"chunk does not inflate: {exc}") from None
        if len(chunk) != raw_len:
            raise PayloadError("chunk length mismatch")
        chunks.append(chunk)
    (n_blobs,) = take("<I")
    blobs: list[bytes] = []
    for _ in range(n_blobs):
        chunk_no, off, length, crc = take("<IIII")
        if chunk_no >= len(chunks) or off + length > len(chunks[chunk_no]):
            raise PayloadError("blob out of range")
        blob = chunks[chunk_no][off:off + length]
        if zlib.crc32(blob) != crc:
            raise PayloadError("blob checksum mismatch")
        blobs.append(blob)
    (n_entries,) = take("<I")
    out: dict[str, bytes] = {}
    for _ in range(n_entries):
        (key_len,) = take("<H")
        key = text(take_bytes(key_len))
        (blob_no,) = take("<I")
        if blob_no >= len(blobs):
            raise PayloadError("entry points past the blobs")
        out[key] = blobs[blob_no]
    return arch, out
