"""Differential tests over every real kernel (tests/realkernels.py: the sample and the Debian
corpus) with clang-built objects.

- python-compat: the bytes bpftool 7.1 writes, or a failure where bpftool fails, for several
  object sets;
- python: every relocation's result against the minimized BTF equals its result against the
  full kernel BTF (target type ids excepted: minimization renumbers them), and the output is
  never larger than bpftool's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import BTF
from gobtfgen.btf.ext import ParsedObject, parse_object
from gobtfgen.minimize import MinimizeError
from gobtfgen.minimize.python import minimize_btf
from gobtfgen.relocs import evaluate_object, wanted_names
from tests import realkernels
from tests.bpfobjs import bpf_objects, run_bpftool_min

__all__ = ["bpf_objects"]


# Object sets minimized together: types.o hits ambiguous target type ids on kernels with
# duplicate task_struct types, which makes bpftool fail; the other set succeeds everywhere.
OBJECT_SETS = {
    "all": ("fields", "types", "matches", "net"),
    "no-types": ("fields", "net", "matches", "tracer"),
    "tracers": ("tracer", "execsnoop", "kprobe_x86", "noreloc"),
}
PYTHON_SET = ("fields", "types", "matches", "net", "synth", "tracer", "fields_eb", "execsnoop",
              "kprobe_x86")


@pytest.fixture(scope="module")
def parsed(bpf_objects: dict[str, Path]) -> dict[str, ParsedObject]:
    return {name: parse_object(path) for name, path in bpf_objects.items()}


def results(blob: bytes, objects: list[ParsedObject]) -> list[list[tuple[object, ...]]]:
    tb = BTF(blob, wanted=wanted_names(objects))
    return [[o.comparable() for o in evaluate_object(obj, tb)] for obj in objects]


@pytest.mark.tools
@pytest.mark.parametrize("kernel", realkernels.params())
def test_kernel(kernel: realkernels.RealKernel, tmp_path: Path, bpf_objects: dict[str, Path],
                parsed: dict[str, ParsedObject]) -> None:
    raw = read_kernel_btf(kernel.path)
    kpath = tmp_path / "kernel.btf"
    kpath.write_bytes(raw)
    bpftool_sizes: dict[str, int] = {}
    for set_name, names in OBJECT_SETS.items():
        theirs, err = run_bpftool_min(kpath, tmp_path / "bpftool.btf",
                                      [bpf_objects[n] for n in names])
        try:
            ours: bytes | None = minimize_btf(raw, [parsed[n] for n in names], compat=True)
            why = ""
        except MinimizeError as exc:
            ours, why = None, str(exc)
        if theirs is None:
            assert ours is None, f"{set_name}: bpftool failed ({err.strip()}) but compat did not"
        else:
            assert ours is not None, f"{set_name}: compat failed ({why}) but bpftool did not"
            assert ours == theirs, f"{set_name}: python-compat bytes differ from bpftool's"
            bpftool_sizes[set_name] = len(theirs)

    objs = [parsed[n] for n in PYTHON_SET]
    minimized = minimize_btf(raw, objs, compat=False)
    assert minimize_btf(raw, objs, compat=False, verify=True) == minimized
    assert results(minimized, objs) == results(raw, objs)
    # The README's size claim: never larger than bpftool's output for the same objects.
    for set_name, size in bpftool_sizes.items():
        ours = minimize_btf(raw, [parsed[n] for n in OBJECT_SETS[set_name]], compat=False)
        assert len(ours) <= size, f"{set_name}: {len(ours)} bytes, bpftool {size}"
