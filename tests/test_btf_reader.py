"""The BTF reader and writer: every kind, both headers, both byte orders, real kernel shapes."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gobtfgen import btf as B
from gobtfgen.btf import BTF, BTFError, Builder, essential_name, essential_name_len
from tests import realkernels
from tests.conftest import need


def every_kind() -> tuple[Builder, dict[str, int]]:
    b = Builder()
    t: dict[str, int] = {}
    t["int"] = b.add_int("int", 4, signed=True)
    t["char"] = b.add_int("char", 1, encoding=B.INT_CHAR)
    t["ptr"] = b.ptr(t["int"])
    t["arr"] = b.array(t["char"], t["int"], 16)
    t["struct"] = b.struct("s", 24, [("a", t["int"], 0, 0), ("bits", t["int"], 35, 3),
                                     ("name", t["arr"], 64, 0)])
    t["union"] = b.union("u", 4, [("x", t["int"], 0, 0)])
    t["enum"] = b.enum("e", 4, [("E_A", -1), ("E_B", 7)], signed=True)
    t["fwd"] = b.fwd("opaque", union=True)
    t["typedef"] = b.typedef("s_t", t["struct"])
    t["volatile"] = b.ref(B.VOLATILE, t["int"])
    t["const"] = b.ref(B.CONST, t["volatile"])
    t["restrict"] = b.ref(B.RESTRICT, t["ptr"])
    t["proto"] = b.func_proto(t["int"], [("x", t["int"]), ("", 0)])
    t["func"] = b.func("f", t["proto"])
    t["var"] = b.var("v", t["int"])
    t["datasec"] = b.datasec(".data", 4, [(t["var"], 0, 4)])
    t["float"] = b.add_float("double", 8)
    t["decl_tag"] = b.decl_tag("tag", t["struct"], 1)
    t["type_tag"] = b.ref(B.TYPE_TAG, t["int"], "user")
    t["enum64"] = b.enum64("e64", 8, [("BIG", 1 << 40), ("NEG", -2)], signed=True)
    return b, t


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("hdr_len", [24, 32])
def test_every_kind_round_trips(little_endian: bool, hdr_len: int) -> None:
    b, t = every_kind()
    blob = b.to_bytes(little_endian=little_endian, hdr_len=hdr_len)
    btf = BTF(blob)
    btf.validate()
    assert btf.header.little_endian == little_endian and btf.header.hdr_len == hdr_len
    assert len(btf) == len(t) + 1
    kinds = {btf.kind(tid) for tid in t.values()}
    assert kinds == set(range(1, 20))
    assert btf.members(t["struct"])[1][2] == (3 << 24) | 35
    assert btf.member_bit_offset(t["struct"], 1) == 35
    assert btf.member_bitfield_size(t["struct"], 1) == 3
    assert btf.array(t["arr"]) == (t["char"], t["int"], 16)
    assert btf.enum_values(t["enum"])[0][1] == (1 << 64) - 1  # s32 -1 sign-extended
    assert [v for _, v in btf.enum_values(t["enum64"])] == [1 << 40, (1 << 64) - 2]
    assert btf.kflag(t["fwd"]) and btf.name(t["fwd"]) == "opaque"
    assert [ty for _, ty in btf.params(t["proto"])] == [t["int"], 0]
    assert btf.referenced_ids(t["datasec"]) == [t["var"]]
    assert btf.name(t["type_tag"]) == "user" and btf.ref(t["type_tag"]) == t["int"]
    assert btf.find_named("s", [B.STRUCT]) == [t["struct"]]
    # Writing the same builder twice gives the same bytes (stable output).
    assert blob == b.to_bytes(little_endian=little_endian, hdr_len=hdr_len)


def test_wanted_names_collected_during_walk() -> None:
    b = Builder()
    i = b.add_int("int", 4)
    s1 = b.struct("task_struct", 4, [("pid", i, 0, 0)])
    s2 = b.struct("task_struct___old", 4, [("pid", i, 0, 0)])
    b.struct("task_structure", 4, [])
    b.struct("task_struct___a___b", 4, [])  # essential name task_struct___a
    e = b.enum("task_struct", 4, [])
    btf = BTF(b.to_bytes(), wanted={"task_struct", "int"})
    assert btf.by_essential_name("task_struct") == [s1, s2, e]
    assert btf.by_essential_name("int") == [i]
    # An unannounced name falls back to the full index.
    assert btf.by_essential_name("task_struct___a") == [5]


@pytest.mark.parametrize("name, ess", [
    ("task_struct", "task_struct"), ("task_struct___old", "task_struct"),
    ("a___b___c", "a___b"), ("___x", "___x"), ("a____b", "a____b"), ("a___", "a___"),
    ("nf_conn___init", "nf_conn"), ("", ""), ("x___y", "x"),
])
def test_essential_name(name: str, ess: str) -> None:
    assert essential_name(name) == ess


@given(st.text(alphabet="ab_", max_size=12))
def test_essential_name_len_is_a_prefix(name: str) -> None:
    n = essential_name_len(name)
    assert 0 <= n <= len(name)
    if n < len(name):
        assert name[n:n + 3] == "___" and name[n - 1] != "_" and name[n + 3] != "_"


def test_unknown_kind_is_an_error() -> None:
    b = Builder()
    b.add_record([0, 25 << 24, 0])
    with pytest.raises(BTFError, match="unknown kind 25"):
        BTF(b.to_bytes())


@pytest.mark.parametrize("blob, why", [
    (b"\x00" * 10, "shorter"),
    (struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 1) + b"\0", "magic"),
    (struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 1) + b"\0", "version"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + b"\0", "past the end"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 8, 8, 1) + b"\0" * 8 + b"\0", "ends inside"),
])
def test_bad_blobs(blob: bytes, why: str) -> None:
    with pytest.raises(BTFError, match=why):
        BTF(blob)


def independent_type_count(raw: bytes, tmp: Path) -> int:
    """The number of types bpftool (libbpf's parser, not ours) finds in a BTF blob."""
    path = tmp / "kernel.btf"
    path.write_bytes(raw)
    bpftool = need("bpftool", " (it counts the types of corpus kernels, which have no manifest)")
    dump = subprocess.run([bpftool, "btf", "dump", "file", str(path)], capture_output=True,
                          text=True, check=True).stdout
    last = dump[dump.rindex("\n[") + 1:] if "\n[" in dump else dump
    return int(last[1:last.index("]")])


@pytest.mark.parametrize("kernel", realkernels.params())
def test_real_kernels_index(kernel: realkernels.RealKernel, tmp_path: Path) -> None:
    from gobtfgen.archive import read_kernel_btf

    raw = read_kernel_btf(kernel.path)
    btf = BTF(raw, wanted={"task_struct", "long unsigned int"})
    # The sample's manifest counted its types when it was made; corpus kernels are counted by
    # bpftool here.
    want = kernel.num_types if kernel.num_types is not None else \
        independent_type_count(raw, tmp_path)
    assert len(btf) - 1 == want
    assert btf.by_essential_name("task_struct")
    assert btf.ptr_size == 8
    # Decode the last type and a struct: the walk framed every record.
    last = len(btf) - 1
    assert btf.kind(last) in B.KIND_NAMES
    ts = [t for t in btf.by_essential_name("task_struct") if btf.kind(t) == B.STRUCT]
    assert any(btf.str_at(m[0]) == "pid" for m in btf.members(ts[0]))


# Kernel shapes worth reading, where this run has the kernel: old pahole output without VAR and
# DATASEC (only the sample has such a kernel: no Debian package served today is that old),
# the newest kinds (the sample's clang-built 6.18; without it, this machine's own kernel), and
# the corpus's gcc-built Debian kernels (ENUM64, no tags).
NATIVE = Path("/sys/kernel/btf/vmlinux")
TAGS = {B.FLOAT, B.DECL_TAG, B.TYPE_TAG, B.ENUM64, B.VAR, B.DATASEC}
SHAPES = [
    ("debian/11/x86_64/5.10.0-32-amd64", {B.FUNC, B.ENUM}, {B.VAR, B.DATASEC}),
    ("vanilla/6.18/x86_64/6.18-cilium-ci", TAGS, set()),
    ("debian/12/x86_64/6.12.117+deb12-cloud-amd64",
     {B.FUNC, B.FLOAT, B.ENUM64, B.VAR, B.DATASEC}, {B.DECL_TAG, B.TYPE_TAG}),
    ("debian/12/arm64/6.1.0-56-cloud-arm64",
     {B.FUNC, B.FLOAT, B.ENUM64, B.VAR, B.DATASEC}, {B.DECL_TAG, B.TYPE_TAG}),
]
_HAVE = {k.key for k in realkernels.KERNELS}
_CASES = [s for s in SHAPES if s[0] in _HAVE]
if NATIVE.is_file() and not any(s[1] == TAGS for s in _CASES):
    # What every kernel with its own BTF has had since pahole 1.21 (no tags: gcc-built kernels
    # have none; every_kind() covers them synthetically).
    _CASES.append(("native", {B.FUNC, B.FLOAT, B.VAR, B.DATASEC}, set()))


@pytest.mark.parametrize("key, present, absent", _CASES or [
    pytest.param(None, None, None, marks=pytest.mark.skip(
        reason="no real kernel BTF of a known shape; run scripts/setup (the kernel corpus)"))])
def test_real_kernel_shapes(key: str, present: set[int], absent: set[int]) -> None:
    from gobtfgen.archive import read_kernel_btf

    btf = BTF(NATIVE.read_bytes() if key == "native" else read_kernel_btf(realkernels.kernel(key)))
    btf.validate()
    kinds = {btf.kind(t) for t in range(1, len(btf))}
    assert present <= kinds and not (absent & kinds)


def test_name_offset_past_the_strings_is_an_error_when_names_are_looked_up() -> None:
    b = Builder()
    i = b.add_int("int", 4)
    b.add_record([10_000, B.info_word(B.STRUCT, 1, False), 4, b.add_str("x"), i, 0])
    blob = b.to_bytes()
    assert len(BTF(blob)) == 3  # framing alone does not read names
    with pytest.raises(BTFError, match="name offset is past the string section"):
        BTF(blob, wanted={"task_struct"})


def _essential_name_len_reference(name: str) -> int:
    """libbpf's loop, character by character (what essential_name_len computes with rfind)."""
    n = len(name)
    for i in range(n - 5, -1, -1):
        if (name[i] != "_" and name[i + 1] == "_" and name[i + 2] == "_"
                and name[i + 3] == "_" and name[i + 4] != "_"):
            return i + 1
    return n


def test_essential_name_len_equals_libbpfs_loop_on_every_short_name() -> None:
    import itertools

    checked = 0
    for length in range(10):
        for chars in itertools.product("a_", repeat=length):
            name = "".join(chars)
            assert essential_name_len(name) == _essential_name_len_reference(name), name
            checked += 1
    assert checked == 1023
