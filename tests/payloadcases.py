"""Minimized-BTF-like kernels for payload tests (tests/test_pack.py, the Go, C and Rust runtime
tests): built from typed records in bpftool's layout, so payload version 2 stores them as type
nodes, with the variation real kernels show (a struct's size and offsets move from release to
release, a member appears)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from gobtfgen import pack
from gobtfgen.btf import ARRAY, CONST, ENUM, INT, PTR, STRUCT, TYPEDEF, info_word
from gobtfgen.pack import Cell, TypeRecord
from tests.tinybtf import tiny_btf


def rec(kind: int, name: str, third: int, *rest: Cell, vlen: int = 0,
        kflag: bool = False) -> TypeRecord:
    """A record: name, info, size_or_type, then the kind's words (names as str)."""
    roles = pack.record_roles(kind, vlen)
    assert roles is not None
    cells: list[Cell] = [name.encode(), info_word(kind, vlen, kflag), third]
    cells += [c.encode() if isinstance(c, str) else c for c in rest]
    assert len(cells) == len(roles), (kind, len(cells), len(roles))
    return TypeRecord(roles=roles, cells=tuple(cells))


def struct_rec(name: str, size: int, members: list[tuple[str, int, int]]) -> TypeRecord:
    return rec(STRUCT, name, size, *(x for m in members for x in m), vlen=len(members))


def kernel(task_size: int, comm_offset: int, *, extra: bool = False) -> bytes:
    """A tracer-like minimized BTF: ints, a typedef, a cyclic list_head, task_struct whose
    layout varies by kernel (size, one offset, optionally one more member)."""
    types = [
        rec(INT, "int", 4, (1 << 24) | 32),  # 1
        rec(INT, "char", 1, 8),  # 2
        rec(TYPEDEF, "pid_t", 1),  # 3
        rec(PTR, "", 5),  # 4 -> list_head
        struct_rec("list_head", 16, [("next", 4, 0), ("prev", 4, 64)]),  # 5
        rec(ARRAY, "", 0, 2, 1, 16),  # 6 char[16]
        rec(PTR, "", 8),  # 7 -> task_struct
    ]
    members = [("pid", 3, 8 * 1024), ("tasks", 5, 8 * 1100), ("comm", 6, 8 * comm_offset),
               ("real_parent", 7, 8 * 1400)]
    if extra:
        members.append(("flags", 1, 8 * 1500))
    types.append(struct_rec("task_struct", task_size, members))  # 8
    types.append(rec(CONST, "", 2))  # 9
    types.append(rec(ENUM, "pid_type", 4, "PIDTYPE_PID", 0, "PIDTYPE_TGID", 1, vlen=2))
    return pack.build_btf(types)


def family(n: int) -> dict[str, bytes]:
    """n kernels of one distro, task_struct moving a little from release to release."""
    return {f"ubuntu/20.04/x86_64/5.4.0-{i}-generic": kernel(9000 + 64 * (i // 3), 1300 + i % 3)
            for i in range(n)}


def mixed(arch: str) -> dict[str, bytes]:
    """Kernels that use every part of payload version 2 when packed with a small group_target
    (200): shared, derived and fresh nodes over several groups, bases, and three kernels it
    must store whole (unreferenced strings)."""
    out = {k.replace("x86_64", arch): b for k, b in family(24).items()}
    out |= {f"raw/1/{arch}/r{i}": tiny_btf(f"raw{i}", padding=i + 1) for i in range(3)}
    return out


# ---- payloads that break one hardening rule (docs/payload-format.md), for every reader --------

@dataclass
class V2Parts:
    """A version 2 payload taken apart so that a test can break one rule of it: the sections
    of its inflated index (as stored) and its groups' compressed streams."""

    arch: bytes
    shapes: bytes  # the shapes section, its count included
    rows: list[list[int]]  # per group: offset, clen, nodes, strings, the five column lengths
    streams: list[bytes]  # per group: its raw DEFLATE stream
    kernels: list[bytes]  # the kernel rows as stored
    entries: list[tuple[bytes, int]]
    index_tail: bytes = b""  # inflated bytes after the index's crc (a stream longer than declared)


def v2_parts(payload: bytes) -> V2Parts:
    _, _, _, _, clen, ilen = pack.HEADER.unpack_from(payload)
    data_start = pack.HEADER.size + clen
    index = zlib.decompress(payload[pack.HEADER.size:data_start], -15)
    x = pack.Payload2(payload, data_start, index)
    c = pack._Cursor(index, "index")
    c.take(c.uvarint())
    shapes_at = c.pos
    for _ in range(c.uvarint()):
        c.take(c.uvarint())
        c.take(c.uvarint())
    shapes = index[shapes_at:c.pos]
    c.pos = x.kernels_at
    c.uvarint()
    kernels = []
    for _ in x.kernels:
        at = c.pos
        tag = c.uvarint()
        c.take(4)
        for _ in range(3 if tag == 1 else c.uvarint()):
            c.uvarint()
        kernels.append(index[at:c.pos])
    assert c.pos == x.entries_at
    return V2Parts(arch=x.arch.encode(), shapes=shapes,
                   rows=[[g.offset, g.clen, g.nodes, g.strings, *g.lengths] for g in x.groups],
                   streams=[x.data[g.offset:g.offset + g.clen] for g in x.groups],
                   kernels=kernels, entries=[(k.encode(), n) for k, n in x.entries])


def v2_payload(parts: V2Parts, *, layout: bool = True) -> bytes:
    """The payload of parts; layout=True places the streams one after the other and sets each
    row's offset and clen (False keeps the rows as they are)."""
    if layout:
        off = 0
        for row, stream in zip(parts.rows, parts.streams, strict=True):
            row[0], row[1] = off, len(stream)
            off += len(stream)
    u = pack._uvarint
    index = u(len(parts.arch)) + parts.arch + parts.shapes + u(len(parts.rows))
    index += b"".join(u(v) for row in parts.rows for v in row)
    index += u(len(parts.kernels)) + b"".join(parts.kernels)
    index += u(len(parts.entries)) + b"".join(u(len(k)) + k + u(n) for k, n in parts.entries)
    index += struct.pack("<I", zlib.crc32(index))
    index_c = pack._deflate(index + parts.index_tail)
    return pack.HEADER.pack(pack.MAGIC, pack.VERSION, 0, 0, len(index_c), len(index)) \
        + index_c + b"".join(parts.streams)


def _chain(kernels: int) -> bytes:
    """One kernel of nodes, then kernels-1 rows each based on the one before (COPY all)."""
    parts = v2_parts(pack.pack("x86_64", {"a/1/x86_64/r00": kernel(9000, 1300)})[0])
    (row0,) = parts.kernels
    crc = row0[1:5]
    copy = pack._uvarint(1) + pack._uvarint(10 << 2 | pack.OP_COPY)  # its 10 types
    parts.kernels = [row0] + [pack._uvarint(1 << 1) + crc + copy] * (kernels - 1)
    parts.entries = [(f"a/1/x86_64/r{i:02}".encode(), i) for i in range(kernels)]
    return v2_payload(parts)


def _overlapping_groups() -> bytes:
    # Group 1's row names group 0's stream again: without the rule, rows pointing at one small
    # stream would each inflate it (up to 64 MiB a row) in one lookup.
    parts = v2_parts(pack.pack("arm64", mixed("arm64"), group_target=200)[0])
    v2_payload(parts)
    parts.rows[1][0:2] = parts.rows[0][0:2]
    return v2_payload(parts, layout=False)


def _group_longer() -> bytes:
    parts = v2_parts(pack.pack("x86_64", family(3))[0])
    inflated = zlib.decompress(parts.streams[0], -15)
    parts.streams[0] = pack._deflate(inflated + b"\0")
    return v2_payload(parts)


def _index_longer() -> bytes:
    parts = v2_parts(pack.pack("x86_64", family(3))[0])
    parts.index_tail = b"\0"
    return v2_payload(parts)


def _list_too_long() -> bytes:
    # One NEW op of 2^30 - 1 fresh nodes: a reader that grew the list before checking would
    # allocate gigabytes.
    parts = v2_parts(pack.pack("x86_64", family(1))[0])
    (row0,) = parts.kernels
    parts.kernels = [row0[:5] + pack._uvarint(1) + pack._uvarint((1 << 30) - 1 << 2 | pack.OP_NEW)]
    return v2_payload(parts)


def hardening_cases() -> dict[str, tuple[bytes, str | None]]:
    """name -> (payload, the error every reader gives for it, None when it reads). The texts
    are those of the Go, C and Rust runtimes and of gobtfgen.pack.Payload2 (a reader may put
    the kernel's key before a lookup's error)."""
    return {
        "chain_16": (_chain(17), None),
        "chain_17": (_chain(18), "payload: kernel 17: its chain of bases is longer than 16"),
        "groups_overlap": (_overlapping_groups(), "payload: group 1 overlaps the group before it"),
        "group_longer": (_group_longer(),
                         "payload: group 0: inflates to more than its declared length"),
        "index_longer": (_index_longer(),
                         "payload: index: inflates to more than its declared length"),
        "list_too_long": (_list_too_long(), "payload: kernel 0: list too long"),
    }


def mixed_payload(arch: str) -> bytes:
    """mixed(arch) packed with small groups, checked to use every part of version 2: several
    groups, kernels on a base, derived nodes, kernels stored whole."""
    payload, stats = pack.pack(arch, mixed(arch), group_target=200)
    _, _, _, _, clen, _ = pack.HEADER.unpack_from(payload)
    x = pack.Payload2(payload, pack.HEADER.size + clen,
                      zlib.decompress(payload[pack.HEADER.size:pack.HEADER.size + clen], -15))
    x.unpack()
    assert len(x.groups) >= 2 and stats.raw_kernels == 3 and x.derived
    assert any(k.back for k in x.kernels)
    return payload


def check_dump(output: str, payload: bytes) -> int:
    """A reader's dump of payload (lines "ok\\tKEY\\tHEX", tests/ctest/harness.c and
    tests/rusttest) against Payload2's rebuild of every kernel, byte for byte; returns how many
    entries it compared."""
    _, want = pack.unpack(payload)
    got: dict[str, bytes] = {}
    for line in output.splitlines():
        status, key, rest = line.split("\t", 2)
        assert status == "ok", line
        got[key] = bytes.fromhex(rest)
    assert sorted(got) == sorted(want)
    for key, btf in want.items():
        assert got[key] == btf, f"{key}: the reader rebuilt other bytes than Payload2"
    return len(got)


def check_hardening(name: str, output: str, error: str | None) -> None:
    """A reader's dump of hardening_cases()[name]: error in every error line (the parse's, or
    each lookup's), or no error at all when error is None."""
    lines = output.splitlines()
    errors = [line.split("\t", 2)[2] for line in lines if line.startswith("err\t")]
    if error is None:
        assert lines and not errors, (name, errors)
    else:
        assert errors, f"{name}: no error, want {error!r}"
        for got in errors:
            assert error in got, (name, got, error)
