"""The type index: framing every record (gobtfgen.btf.index_types), its file in the cache, and
its reuse by the built-in minimizer and generate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gobtfgen import btf as B
from gobtfgen import cli
from gobtfgen.btf import BTF, Builder, TypeIndex, index_types
from gobtfgen.btf import index as btf_index
from tests import realkernels
from tests.bpfobjs import bpf_objects
from tests.test_btf_reader import every_kind

__all__ = ["bpf_objects"]

# Words per record by kind, from include/uapi/linux/btf.h, written out independently of the
# reader's tables: (fixed words after the 3-word header, words per vlen entry).
UAPI_SHAPE = {
    B.INT: (1, 0), B.PTR: (0, 0), B.ARRAY: (3, 0), B.STRUCT: (0, 3), B.UNION: (0, 3),
    B.ENUM: (0, 2), B.FWD: (0, 0), B.TYPEDEF: (0, 0), B.VOLATILE: (0, 0), B.CONST: (0, 0),
    B.RESTRICT: (0, 0), B.FUNC: (0, 0), B.FUNC_PROTO: (0, 2), B.VAR: (1, 0),
    B.DATASEC: (0, 3), B.FLOAT: (0, 0), B.DECL_TAG: (1, 0), B.TYPE_TAG: (0, 0),
    B.ENUM64: (0, 3),
}


def reference_index(btf: BTF) -> tuple[list[int], list[int]]:
    """The plainest possible walk: one record at a time, by the UAPI shapes."""
    words = btf.words
    offsets, named_at = [0], []
    at = 0
    while at < len(words):
        kind = (words[at + 1] >> 24) & 0x1F
        vlen = words[at + 1] & 0xFFFF
        fixed, per = UAPI_SHAPE[kind]
        offsets.append(at)
        if kind in B.NAMED_TYPE_KINDS:
            named_at.append(at)
        at += 3 + fixed + per * vlen
    assert at == len(words)
    return offsets, named_at


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("hdr_len", [24, 32])
def test_index_matches_the_reference_walk(little_endian: bool, hdr_len: int) -> None:
    b, _ = every_kind()
    btf = BTF(b.to_bytes(little_endian=little_endian, hdr_len=hdr_len))
    offsets, named_at = reference_index(btf)
    assert list(btf.index.offsets) == offsets
    assert list(btf.index.named_at) == named_at
    # every_kind has one type of each kind and two INTs: the named kinds are all there.
    assert sorted(btf.kind(t) for t in range(1, len(btf)) if btf.offsets[t] in named_at) == \
        sorted([B.INT, *B.NAMED_TYPE_KINDS])


@pytest.mark.parametrize("kernel", realkernels.params())
def test_real_kernel_index_and_its_file(kernel: realkernels.RealKernel) -> None:
    from gobtfgen.archive import read_kernel_btf

    raw = read_kernel_btf(kernel.path)
    walked = BTF(raw, wanted={"task_struct", "mm_struct", "pid_type"})
    offsets, named_at = reference_index(walked)
    assert list(walked.index.offsets) == offsets and list(walked.index.named_at) == named_at
    # The index file brings back the same index, and candidates found through it are the same.
    blob = btf_index.encode(walked.index, walked.header.type_len)
    loaded = btf_index.decode(blob, walked.header.type_len)
    assert loaded is not None
    reused = BTF(raw, wanted={"task_struct", "mm_struct", "pid_type"}, index=loaded)
    assert reused.index_reused
    for name in ("task_struct", "mm_struct", "pid_type", "long unsigned int"):
        kinds = (B.ENUM, B.ENUM64) if name == "pid_type" else (B.STRUCT, B.INT)
        assert reused.by_essential_name(name, kinds) == walked.by_essential_name(name, kinds)
    assert reused.by_essential_name("task_struct", (B.STRUCT,))
    assert reused.ptr_size == walked.ptr_size == 8


def _two_framings() -> tuple[bytes, bytes]:
    """Two blobs with type sections of the same length but records in different places."""
    a = Builder()
    i = a.add_int("int", 4)
    a.struct("s", 4, [("x", i, 0, 0)])  # 6 words
    a.ptr(i)  # 3
    b = Builder()
    j = b.add_int("int", 4)
    b.ptr(j)
    b.struct("s", 4, [("x", j, 0, 0)])
    blob_a, blob_b = a.to_bytes(), b.to_bytes()
    assert B.parse_header(blob_a).type_len == B.parse_header(blob_b).type_len
    return blob_a, blob_b


def test_damaged_or_foreign_index_files_are_not_trusted() -> None:
    blob_a, blob_b = _two_framings()
    a = BTF(blob_a)
    good = btf_index.encode(a.index, a.header.type_len)
    type_len = a.header.type_len
    assert btf_index.decode(good, type_len) is not None
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    assert btf_index.decode(bytes(flipped), type_len) is None  # checksum
    assert btf_index.decode(good[:-4], type_len) is None  # truncated
    assert btf_index.decode(good, type_len + 4) is None  # another kernel's size
    assert btf_index.decode(b"GBTFIX\0\1" + good[8:], type_len) is None  # older format
    assert btf_index.decode(b"", type_len) is None
    # A whole, checksummed index of another blob of the same size: framing says no.
    foreign = btf_index.decode(good, type_len)
    b = BTF(blob_b, wanted={"s"}, index=foreign)
    assert not b.index_reused
    assert b.by_essential_name("s", (B.STRUCT,)) == [3]


def test_a_foreign_index_that_frames_both_ends_is_caught_in_the_middle() -> None:
    """The file's checksum proves an index whole; sampled framing proves it is this blob's:
    here two blobs of one size share their first and last records, not the middle ones."""
    def blob(counts: list[int]) -> bytes:
        bld = Builder()
        i = bld.add_int("int", 4)
        for n, members in enumerate(counts):
            bld.struct(f"s{n}", 4, [("x", i, 0, 0)] * members)
        return bld.to_bytes()

    counts = [n % 3 for n in range(2000)]
    swapped = counts[:10] + sorted(counts[10:-10]) + counts[-10:]
    blob_a, blob_b = blob(counts), blob(swapped)
    assert B.parse_header(blob_a).type_len == B.parse_header(blob_b).type_len
    index_a = BTF(blob_a).index
    assert BTF(blob_a, index=index_a).index_reused
    b = BTF(blob_b, index=index_a)
    assert not b.index_reused
    assert list(b.index.offsets) == reference_index(b)[0]


def test_walk_errors_name_the_type() -> None:
    bld = Builder()
    bld.add_int("int", 4)
    bld.add_record([0, 25 << 24, 0])
    with pytest.raises(B.BTFError, match="BTF type 2 has unknown kind 25"):
        BTF(bld.to_bytes())
    bld.add_record([0, B.info_word(B.STRUCT, 2, False), 8, 0, 1])  # ends inside its members
    with pytest.raises(B.BTFError, match="ends inside type 1"):
        index_types([0, B.info_word(B.STRUCT, 2, False), 8, 0, 1])


@pytest.mark.tools
def test_minimizer_writes_then_reuses_the_index(tmp_path: Path, bpf_objects: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from gobtfgen.archive import read_kernel_btf
    from gobtfgen.minimize.python import PythonMinimizer

    raw = tmp_path / "kernel.btf"
    raw.write_bytes(read_kernel_btf(realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64")))
    idx = tmp_path / "kernel.idx"
    obj = [bpf_objects["tracer"]]
    m = PythonMinimizer()
    plain = m.minimize(raw, obj)
    assert not idx.exists()
    # With the compiled framing no index is kept (KEEP is False): framing is cheaper than it.
    monkeypatch.setattr(btf_index, "KEEP", False)
    assert m.minimize(raw, obj, index=idx) == plain
    assert not idx.exists()
    # Where the framing runs in Python, the index is kept and read back.
    monkeypatch.setattr(btf_index, "KEEP", True)
    assert m.minimize(raw, obj, index=idx) == plain
    written = idx.read_bytes()
    assert written.startswith(btf_index.MAGIC)

    def no_walk(*_: object) -> TypeIndex:
        raise AssertionError("the kernel was framed again although its index was there")

    monkeypatch.setattr(B, "index_types", no_walk)
    assert m.minimize(raw, obj, index=idx) == plain
    monkeypatch.setattr(B, "index_types", index_types)
    # A damaged index is rebuilt (and rewritten), never trusted.
    idx.write_bytes(written[:-8] + bytes(8))
    assert m.minimize(raw, obj, index=idx) == plain
    assert idx.read_bytes() == written


@pytest.mark.tools
def test_generate_frames_each_kernel_once(tmp_path: Path, real_archive: Path,
                                          probe_objects: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose relocations changed reads every kernel's index from the cache (jobs=1 keeps
    the minimizer in this process, where the walk can be counted)."""
    monkeypatch.setattr(btf_index, "KEEP", True)  # the index where framing runs in Python
    walks: list[int] = []
    real = B.index_types

    def counted(words: list[int]) -> TypeIndex:
        if len(words) > 100_000:  # a kernel, not an object's own BTF
            walks.append(1)
        return real(words)

    monkeypatch.setattr(B, "index_types", counted)
    obj = tmp_path / "probe_bpfel.o"
    shutil.copy(probe_objects["base"], obj)
    cache = tmp_path / "cache"
    args = ["generate", "--archive", str(real_archive), "--include", "debian/12/x86_64",
            "--object", str(obj), "--output-dir", str(tmp_path / "out"), "--cache-dir",
            str(cache), "--minimizer", "python", "--jobs", "1", "--quiet"]
    assert cli.main(args) == 0
    kernels = len(list((cache / "raw").glob("*.zst")))
    assert kernels >= 2 and len(walks) == kernels
    assert len(list((cache / "raw").glob("*.idx"))) == kernels
    shutil.copy(probe_objects["relocs"], obj)
    assert cli.main(args) == 0
    assert len(walks) == kernels  # every kernel minimized again, none framed again
