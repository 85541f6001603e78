"""The compiled loops (gobtfgen/_native.c) against their Python references, and the stripped
kernel BTF the cache keeps (gobtfgen.btf.strip) against the full one: on every real kernel
and on random ones, the same framing, the same stripped bytes, and the same minimized output
(python, python-compat and real bpftool) from the stripped BTF as from the full."""

from __future__ import annotations

import shutil
import struct
import sysconfig
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gobtfgen import btf as B
from gobtfgen import pipeline
from gobtfgen.archive import Kernel, read_kernel_btf
from gobtfgen.btf.ext import CoreRelo, ParsedObject, parse_object
from gobtfgen.btf.native import native
from gobtfgen.btf.strip import serves, strip, strip_reference
from gobtfgen.cache import Cache
from gobtfgen.minimize import MinimizeError
from gobtfgen.minimize.python import minimize_btf
from tests import realkernels
from tests.bpfobjs import bpf_objects, run_bpftool_min
from tests.test_minimize_python_props import kernels

__all__ = ["bpf_objects"]

needs_native = pytest.mark.skipif(
    native is None, reason="gobtfgen._native is not built: reinstall with a C compiler and "
    "Python's headers present (pip install -e .; scripts/setup does)")


def test_the_compiled_module_is_built_where_it_can_be() -> None:
    """A checkout installed by scripts/setup on a machine with a compiler has the module: a
    build that failed silently would leave every cold run slow."""
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") or shutil.which("gcc")) or not include.exists():
        pytest.skip(reason="no C compiler or Python.h here: the pure-Python path is expected")
    assert native is not None


def _frame_both(words: array[int]) -> tuple[object, object]:
    def run(fn: object) -> object:
        try:
            index = fn(words)  # type: ignore[operator]
        except B.BTFError as exc:
            return ("error", str(exc))
        return (list(index.offsets), list(index.named_at))

    return run(B.index_types), run(B.index_types_python)


@needs_native
@pytest.mark.parametrize("kernel", realkernels.params())
def test_frame_and_strip_match_python_on_real_kernels(kernel: realkernels.RealKernel) -> None:
    raw = read_kernel_btf(kernel.path)
    h = B.parse_header(raw)
    words = array("I")
    words.frombytes(raw[h.hdr_len + h.type_off: h.hdr_len + h.type_off + h.type_len])
    compiled, python = _frame_both(words)
    assert compiled == python
    stripped = strip(raw)
    assert stripped is not None and stripped == strip_reference(raw)
    # Smaller, the same ids, a valid BTF whose every kept type is the full one's record.
    full, cut = B.BTF(raw), B.BTF(stripped)
    cut.validate()
    assert len(cut) == len(full) and len(stripped) < len(raw)
    for tid in range(1, len(full), 97):
        assert cut.record(tid) in (full.record(tid), [0, B.PTR << 24, 0])
        if full.kind(tid) in B.NAMED_TYPE_KINDS:
            assert cut.record(tid) == full.record(tid) and cut.name(tid) == full.name(tid)


_RECORD = st.one_of(
    st.tuples(st.just(B.INT), st.integers(0, 3)),
    st.tuples(st.sampled_from([B.PTR, B.CONST, B.TYPEDEF, B.FUNC, B.FWD]), st.integers(0, 2)),
    st.tuples(st.sampled_from([B.STRUCT, B.ENUM, B.FUNC_PROTO, B.ENUM64]), st.integers(0, 4)),
)


@needs_native
@settings(max_examples=400, deadline=None)
@given(records=st.lists(_RECORD, max_size=12), cut=st.integers(0, 200),
       poke=st.tuples(st.integers(0, 200), st.integers(0, 2**32 - 1)))
def test_frame_errors_match_python(records: list[tuple[int, int]], cut: int,
                                   poke: tuple[int, int]) -> None:
    """Truncated sections and unknown kinds: the same offsets, or the same error message."""
    words = array("I")
    for kind, vlen in records:
        words.extend([0, B.info_word(kind, vlen, False), 0])
        extra = {B.INT: 1, B.ARRAY: 3}.get(kind, 0) + vlen * B._PER_VLEN.get(kind, 0)
        words.extend([0] * extra)
    del words[min(cut, len(words)):]
    if words and poke[0] < len(words):
        words[poke[0]] = poke[1]
    compiled, python = _frame_both(words)
    assert compiled == python


@needs_native
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blob=kernels())
def test_strip_matches_python_and_minimizes_the_same_on_random_kernels(
        blob: bytes, bpf_objects: dict[str, Path]) -> None:
    stripped = strip(blob)
    assert stripped is not None and stripped == strip_reference(blob)
    objs = [parse_object(bpf_objects[n]) for n in ("synth", "fields", "types", "tracer")]
    assert serves(objs)
    for compat in (False, True):
        assert _minimized(stripped, objs, compat) == _minimized(blob, objs, compat)


def _minimized(blob: bytes, objs: list[ParsedObject], compat: bool) -> bytes | str:
    try:
        return minimize_btf(blob, objs, compat=compat)
    except MinimizeError as exc:
        return f"error: {exc}"


@needs_native
@pytest.mark.tools
@pytest.mark.parametrize("kernel", realkernels.params())
def test_minimized_from_stripped_is_minimized_from_full(
        kernel: realkernels.RealKernel, bpf_objects: dict[str, Path],
        probe_objects: dict[str, Path]) -> None:
    """The proof that the cache may keep the stripped form: every test object, both built-in
    minimizers, the same bytes (or the same failure) on every real kernel."""
    raw = read_kernel_btf(kernel.path)
    stripped = strip(raw)
    assert stripped is not None
    paths = [probe_objects["base"], probe_objects["relocs"],
             *(bpf_objects[n] for n in ("fields", "types", "matches", "net", "tracer",
                                        "execsnoop"))]
    objs = [parse_object(p) for p in paths]
    assert serves(objs)
    for compat in (False, True):
        for obj in objs:
            assert _minimized(stripped, [obj], compat) == _minimized(raw, [obj], compat), \
                (obj.name, compat)
        assert _minimized(stripped, objs, compat) == _minimized(raw, objs, compat), compat


@needs_native
@pytest.mark.tools
@pytest.mark.parametrize("key", ["debian/12/x86_64/6.1.0-56-amd64",
                                 "debian/12/arm64/6.1.0-56-cloud-arm64"])
def test_bpftool_minimizes_stripped_as_full(key: str, tmp_path: Path,
                                            bpf_objects: dict[str, Path]) -> None:
    raw = read_kernel_btf(realkernels.kernel(key))
    stripped = strip(raw)
    assert stripped is not None
    objs = [bpf_objects[n] for n in ("fields", "types", "tracer")]
    (tmp_path / "full.btf").write_bytes(raw)
    (tmp_path / "stripped.btf").write_bytes(stripped)
    want, _ = run_bpftool_min(tmp_path / "full.btf", tmp_path / "want.btf", objs)
    got, _ = run_bpftool_min(tmp_path / "stripped.btf", tmp_path / "got.btf", objs)
    assert want is not None and want == got


def _object_relocating(kind: int) -> ParsedObject:
    """A parsed object whose one relocation's local root type is a named type of `kind`: a
    unit-test stand-in (clang emits CO-RE relocations on data types only)."""
    b = B.Builder()
    i = b.add_int("int", 4, signed=True)
    root = b.func("gbt_fn", b.func_proto(i, [])) if kind == B.FUNC else \
        b.struct("gbt_s", 4, [("a", i, 0, 0)])
    relo = CoreRelo(section="kprobe/x", index=0, insn_off=0, type_id=root, access="0",
                    kind=0)
    return ParsedObject(path="unit.o", btf=B.BTF(b.to_bytes()), relos=(relo,),
                        little_endian=True, machine="bpf", has_btf_ext=True)


def test_serves_refuses_objects_relocating_against_kinds_strip_drops() -> None:
    assert serves([_object_relocating(B.STRUCT)])
    assert not serves([_object_relocating(B.STRUCT), _object_relocating(B.FUNC)])


def test_strip_keeps_other_layouts_whole() -> None:
    b = B.Builder()
    b.struct("gbt_s", 4, [("a", b.add_int("int", 4), 0, 0)])
    assert strip(b.to_bytes(little_endian=False)) is None
    assert strip(b.to_bytes(hdr_len=32)) is None
    assert strip(b.to_bytes()[:-1]) is None  # the header's lengths do not add up
    assert strip_reference(b.to_bytes(little_endian=False)) is None


@needs_native
def test_strip_rejects_malformed_blobs_as_none() -> None:
    b = B.Builder()
    i = b.add_int("int", 4)
    b.struct("gbt_s", 4, [("a", i, 0, 0)])
    good = b.to_bytes()
    assert strip(good) is not None
    # [1] int (4 words) at byte 24, [2] struct (3 words) at 40, its member (3 words) at 52.
    assert B.parse_header(good).type_len == 16 + 12 + 12
    for at, value in ((56, 99),          # the member refers to a missing type
                      (52, 1 << 20),     # the member's name is past the strings
                      (28, 31 << 24)):   # an unknown kind
        bad = bytearray(good)
        struct.pack_into("<I", bad, at, value)
        assert strip(bytes(bad)) is None
        with pytest.raises(B.BTFError):
            strip_reference(bytes(bad))


@needs_native
@pytest.mark.tools
def test_the_cache_keeps_stripped_kernels_and_the_full_checksum(
        tmp_path: Path, probe_objects: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold kernel: the entry is stripped, the checksum is the full BTF's (what
    PreferEmbedded compares /sys/kernel/btf/vmlinux with). Objects the stripped form does
    not serve get the full BTF from the archive, and the entry stays."""
    key = "debian/12/x86_64/6.1.0-56-amd64"
    path = realkernels.kernel(key)
    raw = read_kernel_btf(path)
    distro, version, arch, release = key.split("/")
    kernel = Kernel(key=key, distro=distro, version=version, arch=arch, release=release,
                    path=path)
    cache = Cache(tmp_path / "cache")
    sha = "ab" * 32
    objects = (probe_objects["base"],)
    btf, full_sum, added = pipeline.kernel_btf(cache, sha, kernel, None, objects)
    assert added and btf == strip(raw) and full_sum == pipeline.fullsum_of(raw)
    assert cache.get_fullsum(sha) == full_sum
    entry = cache.get_kernel(sha)
    assert entry is not None and entry.stripped and entry.btf == btf
    assert pipeline.kernel_btf(cache, sha, kernel, None, objects) == (btf, None, False)
    monkeypatch.setattr(pipeline, "_stripped_serves", lambda objects: False)
    assert pipeline.kernel_btf(cache, sha, kernel, None, objects) == (raw, full_sum, False)
    entry = cache.get_kernel(sha)
    assert entry is not None and entry.stripped


@pytest.mark.tools
def test_generate_without_the_compiled_module_writes_the_same(
        tmp_path: Path, probe_objects: dict[str, Path]) -> None:
    """GOBTFGEN_NO_NATIVE=1 (what a wheel built without a compiler runs): the same outputs,
    and the cache keeps the full BTF; either kind of entry serves the other mode."""
    import os
    import subprocess
    import sys

    archive = tmp_path / "archive"
    for key in ("debian/12/x86_64/6.1.0-56-amd64", "debian/12/arm64/6.1.0-56-cloud-arm64"):
        link = archive / f"{key}.btf.tar.xz"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(realkernels.kernel(key), link)

    def run(out: str, cache: str, obj: str, pure: bool) -> dict[str, bytes]:
        env = {**os.environ, "GOBTFGEN_NO_NATIVE": "1" if pure else "0"}
        proc = subprocess.run(
            [sys.executable, "-m", "gobtfgen", "generate", "--archive", str(archive),
             "--object", str(probe_objects[obj]), "--output-dir", str(tmp_path / out),
             "--cache-dir", str(tmp_path / cache), "--jobs", "1", "--quiet"],
            env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return {p.name: p.read_bytes() for p in sorted((tmp_path / out).iterdir())}

    pure = run("pure", "pure-cache", "base", True)
    assert run("native", "native-cache", "base", False) == pure
    for name, stripped in (("pure-cache", False), ("native-cache", True)):
        cache = Cache(tmp_path / name)
        entries = [cache.get_kernel(p.name.removesuffix(".zst"))
                   for p in (tmp_path / name).glob("raw/*.zst")]
        assert len(entries) == 2
        assert all(e is not None and e.stripped == stripped for e in entries), name
    # Relocations changed: each mode minimizes again from the other's cache entries.
    assert run("a", "native-cache", "relocs", True) == run("b", "pure-cache", "relocs", False)
