"""Kernel BTFs that were never deduplicated, made from a real one.

btfhub-archive's CentOS 8 arm64 kernels (4.18.0-147) hold 562k types, `task_struct` 476 times
identical: pahole encoded every compilation unit's copy. `duplicate` makes such a kernel from
any real BTF by appending copies of all its types (ids shifted, strings shared), and can make
one copy differ in one member deep down, so tests see both identical and differing candidates.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from gobtfgen import btf as B
from gobtfgen.btf import BTF

# The sample's smallest kernel, so a many-fold copy stays quick to minimize.
SAMPLE_KERNEL = "debian/11/arm64/5.10.0-32-cloud-arm64"

# (copy number, record words of one type) -> None: edits the record in place.
Edit = Callable[[int, int, list[int]], None]


def real_kernel_btf() -> bytes:
    """A real kernel's raw BTF: the sample's smallest where present, else a corpus kernel,
    else the host's."""
    from gobtfgen.archive import read_kernel_btf
    from tests import realkernels

    keys = {k.key: k for k in realkernels.KERNELS}
    if SAMPLE_KERNEL in keys:
        return read_kernel_btf(keys[SAMPLE_KERNEL].path)
    if realkernels.KERNELS:
        return read_kernel_btf(realkernels.KERNELS[0].path)
    host = Path("/sys/kernel/btf/vmlinux")
    if host.is_file():
        return host.read_bytes()
    pytest.skip(reason="no real kernel BTF: run scripts/setup (it fetches the Debian kernel "
                       "corpus); ../shared/btfhub-sample or /sys/kernel/btf/vmlinux serve too")


def _ref_positions(kind: int, vlen: int) -> list[int]:
    if kind in (B.PTR, B.TYPEDEF, B.VOLATILE, B.CONST, B.RESTRICT, B.FUNC, B.VAR,
                B.DECL_TAG, B.TYPE_TAG):
        return [2]
    if kind == B.FUNC_PROTO:
        return [2, *(4 + 2 * i for i in range(vlen))]
    if kind == B.ARRAY:
        return [3, 4]
    if kind in (B.STRUCT, B.UNION):
        return [4 + 3 * i for i in range(vlen)]
    if kind == B.DATASEC:
        return [3 + 3 * i for i in range(vlen)]
    return []


def duplicate(raw: bytes, copies: int, edit: Edit | None = None,
              extra: Sequence[list[int]] = ()) -> bytes:
    """`raw` with all its types `copies` times over (copy 0 is the original), little-endian;
    `extra` records follow (ids copies * (len(BTF(raw)) - 1) + 1 on)."""
    k = BTF(raw)
    n = len(k) - 1
    words = array("I")
    for copy in range(copies):
        shift = copy * n
        for tid in range(1, n + 1):
            rec = k.record(tid)
            for i in _ref_positions(k.kind(tid), rec[1] & 0xFFFF):
                if rec[i]:
                    rec[i] += shift
            if edit is not None:
                edit(copy, tid, rec)
            words.extend(rec)
    for rec in extra:
        words.extend(rec)
    types = words.tobytes()
    strs = bytes(k.strings)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                       len(strs)) + types + strs


def nested_member(k: BTF, struct_name: str, member: str) -> tuple[int, int]:
    """(composite id, member index) of `member` of the first `struct_name`, looking into
    anonymous members the way CO-RE does."""
    def find(tid: int) -> tuple[int, int] | None:
        for i, (name_off, mtype, _) in enumerate(k.members(tid)):
            if k.str_at(name_off) == member:
                return tid, i
            if not name_off:
                inner = mtype
                while k.kind(inner) in (B.TYPEDEF, B.CONST, B.VOLATILE):
                    inner = k.ref(inner)
                if k.kind(inner) in (B.STRUCT, B.UNION) and (hit := find(inner)):
                    return hit
        return None

    for tid in k.find_named(struct_name, (B.STRUCT,)):
        if (hit := find(tid)) is not None:
            return hit
    raise LookupError(f"{struct_name}.{member} not in this kernel")
