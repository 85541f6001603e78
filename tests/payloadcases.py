"""Minimized-BTF-like kernels for payload tests (tests/test_pack.py, the Go, C and Rust runtime
tests): built from typed records in bpftool's layout, so payload version 2 stores them as type
nodes, with the variation real kernels show (a struct's size and offsets move from release to
release, a member appears)."""

from __future__ import annotations

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
