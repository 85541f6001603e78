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
# Similarity ordering (see docs/payload-format.md, "Blob order"): 8-byte shingles sampled every
# 4 bytes, compared against what DEFLATE's 32 KiB window still holds; the next blob is chosen
# among the first ORDER_CANDIDATES unplaced ones in key order, so packing stays linear in the
# number of kernels (a full-archive run has thousands) and keeps distro neighbours together.
SHINGLE = 8
WINDOW = 32 << 10
ORDER_CANDIDATES = 32


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


def _shingles(blob: bytes) -> frozenset[bytes]:
    return frozenset(blob[i:i + SHINGLE] for i in range(0, len(blob) - SHINGLE + 1, 4))


def similarity_order(blobs: list[bytes]) -> list[int]:
    """Blob numbers in packing order: each next blob is the candidate sharing the largest part
    of its shingles with the blobs still inside the DEFLATE window (ties: first in key order).
    Deterministic, so the same input still gives the same payload bytes."""
    if not blobs:
        return []
    shingles = [_shingles(b) for b in blobs]
    order = [0]
    unplaced = list(range(1, len(blobs)))  # kept in key order
    while unplaced:
        window: set[bytes] = set()
        size = 0
        for i in reversed(order):
            if size and size + len(blobs[i]) > WINDOW:
                break
            window |= shingles[i]
            size += len(blobs[i])
        best_pos, best_score = 0, -1.0
        for pos, j in enumerate(unplaced[:ORDER_CANDIDATES]):
            score = len(shingles[j] & window) / max(1, len(shingles[j]))
            if score > best_score:
                best_pos, best_score = pos, score
        order.append(unplaced.pop(best_pos))
    return order


def pack(arch: str, entries: Mapping[str, bytes], *,
         order: str = "similar") -> tuple[bytes, PackStats]:
    """Build the payload for one arch from {key: minimized BTF}. Same input, same bytes.

    order="key" packs blobs in key order of first use (gobtfgen <= this change; kept for the
    benchmark's comparison); the default "similar" uses similarity_order. Both are the same
    format: readers find each blob through its index row, whatever the order."""
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
    current = bytearray()
    placement = similarity_order(blobs) if order == "similar" else list(range(len(blobs)))
    rows: dict[int, tuple[int, int, int, int]] = {}
    for blob_no in placement:
        blob = blobs[blob_no]
        if current and len(current) + len(blob) > CHUNK_TARGET:
            chunks.append(bytes(current))
            current = bytearray()
        rows[blob_no] = (len(chunks), len(current), len(blob), zlib.crc32(blob))
        current += blob
    # Blob rows stay numbered in key order of first use: only their offsets follow placement.
    blob_rows = [rows[i] for i in range(len(blobs))]
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
