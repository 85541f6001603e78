"""Synthetic kernels, one per bpftool defect or libbpf rule, against the clang-built synth.o.

Each defect test shows bpftool's output giving a different relocation result than the full
kernel BTF (or bpftool failing), and `--minimizer python` giving the same result as the full
BTF. `python-compat` must match bpftool: same bytes, or a failure where bpftool fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gobtfgen.btf import BTF, TYPE_TAG, Builder
from gobtfgen.btf.ext import parse_object
from gobtfgen.minimize import MinimizeError
from gobtfgen.minimize.python import minimize_btf
from gobtfgen.relocs import evaluate_object, wanted_names
from tests.bpfobjs import bpf_objects, run_bpftool_min

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools


def base() -> tuple[Builder, dict[str, int]]:
    b = Builder()
    ids = {"int": b.add_int("int", 4, signed=True), "long": b.add_int("long", 8, signed=True)}
    return b, ids


def k_dup(b: Builder, t: dict[str, int]) -> None:
    b.struct("gbt_dup", 8, [("a", t["int"], 0, 0), ("b", t["int"], 32, 0)])
    b.struct("gbt_dup", 16, [("a", t["int"], 0, 0), ("pad", t["int"], 32, 0),
                             ("c", t["long"], 64, 0)])


def k_flav(b: Builder, t: dict[str, int]) -> None:
    b.struct("gbt_flav___v2", 8, [("pad", t["int"], 0, 0), ("x", t["int"], 32, 0)])


def k_bits(b: Builder, t: dict[str, int]) -> None:
    # Old pahole encoding (kind_flag=0): the bit count lives in the member's INT type.
    lo = b.add_int("unsigned int", 4, bits=3)
    mid = b.add_int("unsigned int", 4, bits=5)
    b.struct("gbt_bits", 8, [("lo", lo, 0, 0), ("mid", mid, 3, 0), ("after", t["int"], 32, 0)],
             kflag=False)


def k_amb(b: Builder, t: dict[str, int]) -> None:
    b.struct("gbt_amb", 4, [("a", t["int"], 0, 0)])
    b.struct("gbt_amb", 8, [("pad", t["int"], 0, 0), ("a", t["int"], 32, 0)])


def k_fwd(b: Builder, t: dict[str, int]) -> None:
    b.typedef("gbt_opaque_p", b.ptr(b.fwd("gbt_opaque")))


def k_tag(b: Builder, t: dict[str, int]) -> None:
    b.typedef("gbt_tagged_p", b.ptr(b.ref(TYPE_TAG, t["int"], "user")))


def k_enum(b: Builder, t: dict[str, int]) -> None:
    b.enum("gbt_big", 4, [(f"GBT_V{i}", 100 + i) for i in range(200)]
           + [("GBT_ONE", 1), ("GBT_TWO", 2)])


def k_handle(b: Builder, t: dict[str, int]) -> None:
    obj = b.struct("gbt_obj", 4, [("x", t["int"], 0, 0)])
    handle = b.typedef("gbt_handle", b.ptr(obj))
    b.struct("gbt_holder", 8, [("h", handle, 0, 0)])


def k_quirk(b: Builder, t: dict[str, int]) -> None:
    # A `c` of the wrong kind inside an anonymous struct, then the real `c`: libbpf's search
    # leaves the anonymous struct's offset on its spec and computes 20, not 16.
    obj = b.struct("gbt_obj", 4, [("x", t["int"], 0, 0)])
    anon = b.struct("", 8, [("pad", t["int"], 0, 0), ("c", obj, 32, 0)])
    b.struct("gbt_dup", 24, [("a", t["int"], 0, 0), ("", anon, 32, 0), ("c", t["long"], 128, 0)])


def kernel(*parts: Callable[[Builder, dict[str, int]], None], little_endian: bool = True,
           hdr_len: int = 24) -> bytes:
    b, t = base()
    for part in parts:
        part(b, t)
    return b.to_bytes(little_endian=little_endian, hdr_len=hdr_len)


def results(btf_bytes: bytes, obj_path: Path) -> dict[tuple[str, int], tuple[object, ...]]:
    obj = parse_object(obj_path)
    tb = BTF(btf_bytes, wanted=wanted_names([obj]))
    return {(o.relo.section, o.relo.index): o.comparable() for o in evaluate_object(obj, tb)}


def run_all(tmp_path: Path, blob: bytes, obj: Path) -> dict[str, object]:
    kpath = tmp_path / "kernel.btf"
    kpath.write_bytes(blob)
    parsed = [parse_object(obj)]
    out: dict[str, object] = {}
    out["bpftool"], out["bpftool_err"] = run_bpftool_min(kpath, tmp_path / "bt.btf", [obj])
    try:
        out["compat"] = minimize_btf(blob, parsed, compat=True)
    except MinimizeError as exc:
        out["compat"] = None
        out["compat_err"] = str(exc)
    out["python"] = minimize_btf(blob, parsed, compat=False)
    return out


def section(res: dict[tuple[str, int], tuple[object, ...]], sec: str) -> list[tuple[object, ...]]:
    return [v for (s, _), v in sorted(res.items()) if s == sec]


def test_duplicate_names_every_candidate_kept(tmp_path: Path,
                                              bpf_objects: dict[str, Path]) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(k_dup)
    out = run_all(tmp_path, blob, obj)
    assert out["compat"] == out["bpftool"] is not None
    full = section(results(blob, obj), "kprobe/gbt_dup")
    assert full[1][:3] == ("ok", False, 8)  # `c` found in the second gbt_dup
    assert isinstance(out["bpftool"], bytes) and isinstance(out["python"], bytes)
    # bpftool marked only the first candidate for `a`: against its output the second gbt_dup
    # no longer has `a`, the candidate list narrows to the first, and `c` gets poisoned.
    assert section(results(out["bpftool"], obj), "kprobe/gbt_dup")[1][:2] == ("ok", True)
    assert section(results(out["python"], obj), "kprobe/gbt_dup") == full


def test_kernel_side_flavour(tmp_path: Path, bpf_objects: dict[str, Path]) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(k_flav)
    out = run_all(tmp_path, blob, obj)
    assert out["compat"] == out["bpftool"] is not None
    full = section(results(blob, obj), "kprobe/gbt_flav")
    assert full[0][:3] == ("ok", False, 4)
    assert isinstance(out["python"], bytes)
    assert section(results(out["python"], obj), "kprobe/gbt_flav") == full


@pytest.mark.parametrize("part, sec", [(k_fwd, "kprobe/gbt_types"), (k_tag, "kprobe/gbt_types"),
                                       (k_bits, "kprobe/gbt_bits")],
                         ids=["fwd", "type_tag", "kflag0_bitfield"])
def test_bpftool_aborts_python_keeps(tmp_path: Path, bpf_objects: dict[str, Path],
                                     part: Callable[[Builder, dict[str, int]], None],
                                     sec: str) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(part)
    out = run_all(tmp_path, blob, obj)
    assert out["bpftool"] is None, "bpftool was expected to fail on this kernel"
    assert out["compat"] is None, "python-compat must fail where bpftool fails"
    full = results(blob, obj)
    assert any(v[:2] == ("ok", False) and v[2] for v in section(full, sec))
    assert isinstance(out["python"], bytes)
    assert results(out["python"], obj) == full


def test_ambiguity_reproduced_not_fatal(tmp_path: Path, bpf_objects: dict[str, Path]) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(k_amb, k_flav)
    out = run_all(tmp_path, blob, obj)
    assert out["bpftool"] is None and out["compat"] is None
    full = results(blob, obj)
    assert section(full, "kprobe/gbt_amb") == [("error", "ambiguity")]
    assert isinstance(out["python"], bytes)
    # The ambiguous relocation fails the same way; the rest of the kernel is still served.
    assert results(out["python"], obj) == full
    assert section(full, "kprobe/gbt_flav")[0][:3] == ("ok", False, 4)


def test_enum_value_keeps_only_referenced_enumerators(tmp_path: Path,
                                                      bpf_objects: dict[str, Path]) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(k_enum)
    out = run_all(tmp_path, blob, obj)
    assert out["compat"] == out["bpftool"] is not None
    assert isinstance(out["python"], bytes) and isinstance(out["bpftool"], bytes)
    full = results(blob, obj)
    assert section(full, "kprobe/gbt_enum")[0][:3] == ("ok", False, 2)
    assert results(out["python"], obj) == full
    py = BTF(out["python"])
    (enum_id,) = py.find_named("gbt_big")
    assert [py.str_at(n) for n, _ in py.enum_values(enum_id)] == ["GBT_TWO"]
    assert py.size(enum_id) == 4
    bt = BTF(out["bpftool"])
    assert len(bt.enum_values(bt.find_named("gbt_big")[0])) == 202
    assert len(out["python"]) * 5 < len(out["bpftool"])


@pytest.mark.parametrize("little_endian, hdr_len", [(False, 24), (True, 32), (False, 32)])
def test_header_and_byte_order_variants(tmp_path: Path, bpf_objects: dict[str, Path],
                                        little_endian: bool, hdr_len: int) -> None:
    obj = bpf_objects["synth"]
    ref = kernel(k_dup, k_flav, k_enum)
    blob = kernel(k_dup, k_flav, k_enum, little_endian=little_endian, hdr_len=hdr_len)
    parsed = [parse_object(obj)]
    kpath = tmp_path / "kernel.btf"
    kpath.write_bytes(blob)
    theirs, _ = run_bpftool_min(kpath, tmp_path / "out.btf", [obj])
    try:
        compat: bytes | None = minimize_btf(blob, parsed, compat=True)
    except MinimizeError:
        compat = None
    # bpftool (libbpf) reads a non-native BTF only with the 24-byte header.
    assert compat == theirs
    if theirs is not None:
        assert compat == minimize_btf(ref, parsed, compat=True)
    assert minimize_btf(blob, parsed, compat=False) == minimize_btf(ref, parsed, compat=False)
    assert results(blob, obj) == results(ref, obj)


def test_pointer_target_kept_for_type_relocations(tmp_path: Path,
                                                  bpf_objects: dict[str, Path]) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(k_handle)
    out = run_all(tmp_path, blob, obj)
    assert out["compat"] == out["bpftool"] is not None
    assert isinstance(out["bpftool"], bytes) and isinstance(out["python"], bytes)
    full = section(results(blob, obj), "kprobe/gbt_handle")
    assert full[-1][:3] == ("ok", False, 0)  # void * vs struct gbt_obj *: incompatible
    # bpftool kept the typedef for the field read but turned its pointer into `void *`.
    assert section(results(out["bpftool"], obj), "kprobe/gbt_handle")[-1][:3] == ("ok", False, 1)
    assert section(results(out["python"], obj), "kprobe/gbt_handle") == full
    assert BTF(out["python"]).find_named("gbt_obj")


def test_libbpf_search_quirk_reproduced(bpf_objects: dict[str, Path]) -> None:
    obj = bpf_objects["synth"]
    blob = kernel(k_quirk)
    full = section(results(blob, obj), "kprobe/gbt_dup")
    assert full[1][:3] == ("ok", False, 20)  # what libbpf computes, quirk included
    py = minimize_btf(blob, [parse_object(obj)], compat=False)
    assert section(results(py, obj), "kprobe/gbt_dup") == full
