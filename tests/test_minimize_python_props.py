"""Random small kernels against the test objects (hypothesis): for every kernel,
python-compat writes bpftool's bytes or fails where bpftool fails, and every relocation resolves
against python's output as it does against the full kernel."""

from __future__ import annotations

import contextlib
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gobtfgen.btf import BTF, TYPE_TAG, Builder
from gobtfgen.btf.ext import ParsedObject, parse_object
from gobtfgen.minimize import MinimizeError
from gobtfgen.minimize.python import minimize_btf
from gobtfgen.relocs import evaluate_object, wanted_names
from tests.bpfobjs import bpf_objects, bpftool_or_skip

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools

# Struct names the test objects relocate against, with member names they use.
STRUCTS = {
    "gbt_dup": ["a", "b", "c", "pad"],
    "gbt_flav": ["x", "pad"],
    "gbt_bits": ["lo", "mid", "after"],
    "gbt_amb": ["a", "pad"],
    "gbt_holder": ["h"],
    "gbt_obj": ["x"],
    "task_struct": ["pid", "tgid", "prio", "flags", "comm", "mm", "se", "real_parent",
                    "fs", "sched_reset_on_fork", "gobtfgen_no_such_field"],
    "task_struct___post514": ["__state"],
    "mm_struct": ["arg_start", "arg_end", "saved_auxv", "total_vm"],
    "sched_entity": ["vruntime", "sum_exec_runtime"],
}
TYPEDEFS = ["gbt_opaque_p", "gbt_tagged_p", "gbt_handle", "irq_handler_t", "atomic_t",
            "loff_t"]
ENUMS = {
    "gbt_big": ["GBT_ONE", "GBT_TWO", "GBT_X"],
    "bpf_func_id": ["BPF_FUNC_map_lookup_elem", "BPF_FUNC_get_current_task",
                    "BPF_FUNC_probe_read_kernel", "BPF_FUNC_get_current_task_btf",
                    "BPF_FUNC_ringbuf_output", "BPF_FUNC_d_path", "BPF_FUNC_other"],
    "pid_type": ["PIDTYPE_PID", "PIDTYPE_TGID", "PIDTYPE_PGID", "PIDTYPE_MAX"],
}
FLAVOURS = ["", "", "", "___v2", "___old"]


@st.composite
def kernels(draw: st.DrawFn) -> bytes:
    b = Builder()
    ints = [b.add_int("int", 4, signed=True), b.add_int("long", 8, signed=True),
            b.add_int("unsigned int", 4), b.add_int("char", 1, signed=True)]
    pool: list[int] = list(ints)  # types a member may have
    n_structs = draw(st.integers(1, 12))
    for _ in range(n_structs):
        base = draw(st.sampled_from(sorted(STRUCTS)))
        name = base + draw(st.sampled_from(FLAVOURS))
        names = draw(st.lists(st.sampled_from(STRUCTS[base]), min_size=0, max_size=5,
                              unique=True))
        kflag = draw(st.booleans())
        members = []
        bit = 0
        for mname in names:
            shape = draw(st.integers(0, 9))
            if shape == 0:
                mtype = b.ptr(draw(st.sampled_from(pool)))
            elif shape == 1:
                mtype = b.array(draw(st.sampled_from(ints)), ints[0], draw(st.integers(0, 20)))
            elif shape == 2 and len(pool) > len(ints):
                mtype = draw(st.sampled_from(pool[len(ints):]))
            elif shape == 3:
                # An anonymous struct or union holding some of the names (libbpf searches it
                # recursively), members at random offsets.
                inner = draw(st.lists(st.sampled_from(STRUCTS[base]), max_size=3, unique=True))
                union = draw(st.booleans())
                mtype = b.composite("", 8 * max(1, len(inner)),
                                    [(n, draw(st.sampled_from(ints)), 0 if union else 64 * k, 0)
                                     for k, n in enumerate(inner)], union=union)
                members.append(("", mtype, (bit + 63) // 64 * 64, 0))
                bit = (bit + 63) // 64 * 64 + 64 * max(1, len(inner))
                continue
            else:
                mtype = draw(st.sampled_from(ints))
            bits = 0
            # Only integers are bitfields in C (libbpf reads a bitfield's size from its type).
            if kflag and mtype in ints and draw(st.integers(0, 3)) == 0:
                bits = draw(st.integers(1, 7))
                bit += draw(st.integers(0, 5))
            else:
                bit = (bit + 63) // 64 * 64
            members.append((mname, mtype, bit, bits))
            bit += bits or 64
        pool.append(b.struct(name, (bit + 63) // 64 * 8, members, kflag=kflag))
    for tname in TYPEDEFS:
        shape = draw(st.integers(0, 4))
        if shape == 0:
            continue
        if shape == 1:
            target = b.ptr(b.fwd("gbt_opaque"))
        elif shape == 2:
            target = b.ptr(b.ref(TYPE_TAG, ints[0], "user"))
        elif shape == 3:
            target = b.ptr(draw(st.sampled_from(pool)))
        else:
            target = b.ptr(0)
        b.typedef(tname, target)
    for ename, evals in ENUMS.items():
        for _ in range(draw(st.integers(0, 2))):
            vals = draw(st.lists(st.sampled_from(evals), unique=True))
            flav = draw(st.sampled_from(FLAVOURS))
            numbered = [(v, draw(st.integers(-3, 300))) for v in vals]
            if draw(st.booleans()):
                b.enum(ename + flav, 4, numbered, signed=draw(st.booleans()))
            else:
                b.enum64(ename + flav, 8, numbered)
    if draw(st.booleans()):
        b.union("bpf_attr", 4, [("map_type", ints[2], 0, 0)])
    # What a real kernel has besides: functions (some sharing a prototype with a struct's
    # function pointer), per-cpu variables, declaration tags. No relocation reaches them; the
    # cache's stripped kernels (gobtfgen.btf.strip) drop them, tests/test_strip.py checks that
    # changes nothing.
    for _ in range(draw(st.integers(0, 4))):
        params = [(f"p{i}", b.ptr(draw(st.sampled_from(pool))) if draw(st.booleans())
                   else draw(st.sampled_from(pool))) for i in range(draw(st.integers(0, 3)))]
        proto = b.func_proto(draw(st.sampled_from(ints)), params)
        if draw(st.booleans()):
            b.struct("gbt_ops", 8, [("fn", b.ptr(proto), 0, 0)])
        fn = b.func(draw(st.sampled_from(["do_thing", "gbt_dup", "task_struct"])), proto)
        if draw(st.booleans()):
            b.decl_tag("tag", fn)
    if draw(st.booleans()):
        var = b.var("percpu_thing", b.array(draw(st.sampled_from(pool)), ints[0], 4))
        b.datasec(".data..percpu", 64, [(var, 0, 64)])
    return b.to_bytes()


def results(blob: bytes, objs: list[ParsedObject]) -> list[list[tuple[object, ...]]]:
    tb = BTF(blob, wanted=wanted_names(objs))
    return [[o.comparable() for o in evaluate_object(obj, tb)] for obj in objs]


# Found by test_random_kernels: task_struct and task_struct___v2 are both candidates of the
# objects' task_struct relocations, with the read field at one offset but of other sizes; libbpf
# takes the load size from the first candidate, so the minimized BTF must keep their order.
CANDIDATE_ORDER_KERNEL = bytes.fromhex(
    "9feb010018000000000000003c0100003c0100005a0000000100000000000001040000002000000105000000"
    "0000000108000000400000010a00000000000001040000002000000017000000000000010100000008000001"
    "0000000000000002010000000000000000000002010000000000000000000002010000000000000000000002"
    "010000003500000005000004280000001c000000050000000000000021000000010000004000000026000000"
    "06000000800000002a00000007000000c0000000300000000800000000010000460000000000000400000000"
    "4600000000000004000000004600000000000004000000004600000000000004000000004600000000000004"
    "000000004600000000000004000000004600000000000004000000000000000000000002010000004e000000"
    "02000004100000001c000000110000000000000021000000020000004000000000696e74006c6f6e6700756e"
    "7369676e656420696e740063686172007072696f00746769640070696400666c61677300636f6d6d00746173"
    "6b5f7374727563745f5f5f7632006762745f616d62007461736b5f73747275637400"
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(blob=kernels())
@example(blob=CANDIDATE_ORDER_KERNEL)
def test_random_kernels(blob: bytes, bpf_objects: dict[str, Path],
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    paths = [bpf_objects[n] for n in ("synth", "fields", "types", "tracer", "matches")]
    objs = [parse_object(p) for p in paths]
    tmp = tmp_path_factory.mktemp("prop")
    kpath = tmp / "kernel.btf"
    kpath.write_bytes(blob)
    proc = subprocess.run([bpftool_or_skip(), "gen", "min_core_btf", str(kpath),
                           str(tmp / "out.btf"), *map(str, paths)], capture_output=True)
    theirs = (tmp / "out.btf").read_bytes() if proc.returncode == 0 else None
    try:
        ours: bytes | None = minimize_btf(blob, objs, compat=True)
    except MinimizeError:
        ours = None
    assert ours == theirs, proc.stderr.decode()[-300:]
    py = minimize_btf(blob, objs, compat=False, verify=False)
    assert results(py, objs) == results(blob, objs)


@settings(max_examples=300, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blob=kernels(), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2**32 - 1)),
                                      min_size=1, max_size=4))
def test_corrupt_kernels_fail_cleanly(blob: bytes, flips: list[tuple[int, int]],
                                      bpf_objects: dict[str, Path]) -> None:
    """A damaged kernel BTF is a MinimizeError for that kernel, never a crash."""
    data = bytearray(blob)
    for pos, value in flips:
        word = 24 + (pos * 4) % max(4, len(data) - 27)
        data[word:word + 4] = value.to_bytes(4, "little")
    objs = [parse_object(bpf_objects[n]) for n in ("synth", "fields", "types", "tracer")]
    for compat in (True, False):
        with contextlib.suppress(MinimizeError):
            minimize_btf(bytes(data), objs, compat=compat)


def test_builtin_identity_is_known_without_importing_the_minimizer() -> None:
    """The unchanged re-run takes the identity from gobtfgen.minimize; it must be the one the
    minimizers put in the cache key."""
    from gobtfgen.minimize import builtin_identity
    from gobtfgen.minimize.python import PythonCompatMinimizer, PythonMinimizer

    assert builtin_identity("python") == PythonMinimizer().identity() == "python 3"
    assert builtin_identity("python-compat") == PythonCompatMinimizer().identity()
    assert builtin_identity("bpftool") is None
