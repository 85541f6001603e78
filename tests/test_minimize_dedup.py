"""The python minimizer on kernels that were never deduplicated (issue 16, point 1).

A real kernel's types copied eight times over: every copy of `task_struct` is a matching
candidate. One representative of identical candidates is enough; candidates that differ in a
member a relocation reads (however deep) must all stay, and every relocation must resolve as
against the full BTF. The output is never larger than bpftool's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gobtfgen import btf as B
from gobtfgen.btf import BTF
from gobtfgen.btf.ext import ParsedObject, parse_object
from gobtfgen.minimize.python import minimize_btf
from gobtfgen.relocs import evaluate_object, wanted_names
from tests.bpfobjs import bpf_objects, run_bpftool_min
from tests.dupkernel import duplicate, nested_member, real_kernel_btf

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools
COPIES = 8
TRACERS = ("tracer", "execsnoop", "fields", "net")


@pytest.fixture(scope="module")
def raw() -> bytes:
    return real_kernel_btf()


@pytest.fixture(scope="module")
def objs(bpf_objects: dict[str, Path]) -> list[ParsedObject]:
    return [parse_object(bpf_objects[n]) for n in TRACERS]


def results(blob: bytes, objects: list[ParsedObject]) -> list[list[tuple[object, ...]]]:
    tb = BTF(blob, wanted=wanted_names(objects))
    return [[o.comparable() for o in evaluate_object(obj, tb)] for obj in objects]


def count(blob: bytes, name: str) -> int:
    return len(BTF(blob).find_named(name, (B.STRUCT,)))


def test_identical_copies_keep_one(raw: bytes, objs: list[ParsedObject], tmp_path: Path,
                                   bpf_objects: dict[str, Path]) -> None:
    dup = duplicate(raw, COPIES)
    assert count(dup, "task_struct") == COPIES * count(raw, "task_struct")
    ours = minimize_btf(dup, objs, compat=False)
    # Copy 0 holds the first of every set of identical types: the same bytes as the original.
    assert ours == minimize_btf(raw, objs, compat=False)
    assert count(ours, "task_struct") == 1
    assert results(ours, objs) == results(dup, objs)
    assert minimize_btf(dup, objs, compat=False, verify=True) == ours
    kpath = tmp_path / "dup.btf"
    kpath.write_bytes(dup)
    theirs, err = run_bpftool_min(kpath, tmp_path / "bpftool.btf",
                                  [bpf_objects[n] for n in TRACERS])
    assert theirs is not None, err
    assert len(ours) <= len(theirs), (len(ours), len(theirs))


def _shift_member(raw: bytes, struct_name: str, member: str, copy: int) -> bytes:
    """`raw` copied COPIES times, with `member` of `struct_name` 64 bits later in one copy."""
    comp, idx = nested_member(BTF(raw), struct_name, member)

    def edit(c: int, tid: int, rec: list[int]) -> None:
        if c == copy and tid == comp:
            rec[3 + 3 * idx + 2] += 64

    return duplicate(raw, COPIES, edit)


def test_copy_differing_in_a_read_nested_member_stays(raw: bytes,
                                                      objs: list[ParsedObject]) -> None:
    # arg_start sits in mm_struct's anonymous inner struct: the tracers read task->mm->arg_start.
    dup = _shift_member(raw, "mm_struct", "arg_start", copy=3)
    ours = minimize_btf(dup, objs, compat=False)
    full = results(dup, objs)
    # Against the full BTF the two shapes make libbpf report ambiguity; the output must too.
    assert any(r[0] == "error" for per in full for r in per)
    assert results(ours, objs) == full
    # One per shape kept, not one per copy: the ambiguous read marked arg_start in copies 0-3
    # only (libbpf stops at copy 3), so copies 0-2, copy 3 and copies 4-7 are three shapes.
    assert count(ours, "mm_struct") == 3
    assert minimize_btf(dup, objs, compat=False, verify=True) == ours


def test_copy_differing_in_an_unread_member_merges(raw: bytes,
                                                   objs: list[ParsedObject]) -> None:
    # env_end is read by no relocation: minimized, every copy has the same shape again.
    dup = _shift_member(raw, "mm_struct", "env_end", copy=3)
    ours = minimize_btf(dup, objs, compat=False)
    assert results(ours, objs) == results(dup, objs)
    assert count(ours, "mm_struct") == 1


def test_copy_pointing_at_a_forward_declaration_merges(raw: bytes,
                                                       objs: list[ParsedObject]) -> None:
    # As in a compilation unit that only forward-declares mm_struct: in copy 5,
    # `struct mm_struct *` points at a FWD (void * once minimized). Field reads never look
    # behind a pointer, so that task_struct is still the same candidate as the others.
    k = BTF(raw)
    task, idx = nested_member(k, "task_struct", "mm")
    ptr = k.member(task, idx)[1]
    assert k.kind(ptr) == B.PTR
    fwd_id = COPIES * (len(k) - 1) + 1
    fwd = [k.name_off(k.ref(ptr)), B.FWD << 24, 0]

    def edit(c: int, tid: int, rec: list[int]) -> None:
        if c == 5 and tid == ptr:
            rec[2] = fwd_id

    dup = duplicate(raw, COPIES, edit, extra=[fwd])
    assert BTF(dup).kind(fwd_id) == B.FWD
    ours = minimize_btf(dup, objs, compat=False)
    assert results(ours, objs) == results(dup, objs)
    assert count(ours, "task_struct") == 1
    assert minimize_btf(dup, objs, compat=False, verify=True) == ours
    # Pointers still say what they point at: the output's task_struct.mm is mm_struct's.
    small = BTF(ours)
    (t,) = small.find_named("task_struct", (B.STRUCT,))
    mm = next(m for m in small.members(t) if small.str_at(m[0]) == "mm")[1]
    assert small.name(small.ref(mm)) == "mm_struct"
