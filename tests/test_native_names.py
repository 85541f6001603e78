"""The compiled candidate-name scan (gobtfgen/_native.c, names) against BTF._collect_python, its
reference: on every real kernel and on random blobs with odd names (flavours, underscores,
invalid and multi-byte UTF-8, names running to the section's end, bytes after the section),
the same ids in the same order for every wanted name, or the same error."""

from __future__ import annotations

import struct

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gobtfgen import btf as B
from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf.native import native
from tests import realkernels

needs_native = pytest.mark.skipif(
    native is None, reason="gobtfgen._native is not built: reinstall with a C compiler and "
    "Python's headers present (pip install -e .; scripts/setup does)")


def _collect_both(k: B.BTF, wanted: set[str]) -> tuple[object, object]:
    """(compiled, python): each wanted name's ids, or the error message."""
    def run(compiled: bool) -> object:
        try:
            k._collect(wanted, compiled=compiled)
        except B.BTFError as exc:
            return ("error", str(exc))
        return k._wanted

    # The compiled scan runs on the compiled framing's views only; otherwise this would
    # compare the Python scan with itself.
    assert isinstance(k.index.named_at, memoryview) and isinstance(k.offsets, memoryview)
    return run(True), run(False)


@needs_native
@pytest.mark.parametrize("kernel", realkernels.params())
def test_names_match_python_on_real_kernels(kernel: realkernels.RealKernel) -> None:
    k = B.BTF(read_kernel_btf(kernel.path))
    named = [k.name(t) for t in range(1, len(k)) if k.kind(t) in B.NAMED_TYPE_KINDS]
    funcs = [k.name(t) for t in range(1, len(k), 53) if k.kind(t) == B.FUNC]
    # Names a CO-RE object asks for (struct, typedef, enum and int names, `long`'s aliases),
    # flavoured and near-flavoured forms, function names (not a named type kind) and misses.
    wanted = set(named[::37]) | set(funcs[:20]) | set(B._LONG_ALIASES)
    wanted |= {"task_struct", "task_struct___old", "sk_buff", "pt_regs", "gbt_not_a_type"}
    wanted |= {B.essential_name(n + "___v2") for n in named[::211]}
    compiled, python = _collect_both(k, wanted)
    assert compiled == python
    assert isinstance(python, dict) and python["task_struct"], "the scan found nothing"
    # And as the constructor runs it (ptr_size reads the aliases it collected).
    assert B.BTF(read_kernel_btf(kernel.path), wanted=wanted)._wanted == python


_PIECES = [b"a", b"b", b"_", b"__", b"___", b"t", b"\xff", b"\x80", b"\xc3\xa9", b"\xe2\x82",
           b"\xef\xbf\xbd", b"\xed\xa0\x80", b" ", b"long", b"int "]
_NAME = st.lists(st.sampled_from(_PIECES), max_size=7).map(b"".join)
_KINDS = [B.INT, B.STRUCT, B.UNION, B.ENUM, B.FWD, B.TYPEDEF, B.FLOAT, B.TYPE_TAG, B.ENUM64,
          B.PTR, B.FUNC, B.VAR]
_TEXT = st.text(st.sampled_from(["a", "b", "_", "t", "é", "\ufffd", " ", "\0"]), max_size=6)


def _blob(names: list[bytes], records: list[tuple[int, int]], *, little: bool,
          terminated: bool, trailer: bytes, no_strings: bool) -> bytes:
    strings = b"" if no_strings else b"\0" + b"\0".join(names) + (b"\0" if terminated else b"")
    words: list[int] = []
    for kind, name_off in records:
        tail = {B.INT: [32], B.VAR: [0]}.get(kind, [])
        # vlen 0 for the kinds that have vlen entries: the scan reads only the name word
        words += [name_off, B.info_word(kind, 0, False), 4, *tail]
    order = "<" if little else ">"
    types = struct.pack(f"{order}{len(words)}I", *words)
    head = struct.pack(f"{order}HBBIIIII", B.MAGIC, 1, 0, B.HEADER_LEN, 0, len(types),
                       len(types), len(strings))
    return head + types + strings + trailer


@needs_native
@settings(max_examples=600, deadline=None)
@given(names=st.lists(_NAME, min_size=1, max_size=10),
       picks=st.lists(st.tuples(st.sampled_from(_KINDS), st.integers(0, 60)), max_size=14),
       extra=st.sets(_TEXT, max_size=5), little=st.booleans(), terminated=st.booleans(),
       trailer=st.sampled_from([b"", b"a", b"_x", b"\xff\xfe"]), as_view=st.booleans(),
       no_strings=st.integers(0, 19))
def test_names_match_python_on_random_blobs(names: list[bytes], picks: list[tuple[int, int]],
                                            extra: set[str], little: bool, terminated: bool,
                                            trailer: bytes, as_view: bool,
                                            no_strings: int) -> None:
    """Name offsets at a name's start, inside one, at the last byte and past the section
    (the error); wanted names as the kernel's decode, flavoured, and odd text (U+FFFD, NUL,
    non-ASCII, empty)."""
    starts = [1]
    for n in names[:-1]:
        starts.append(starts[-1] + len(n) + 1)
    str_len = 0 if no_strings == 0 else 1 + sum(len(n) + 1 for n in names) - (not terminated)
    # pick < 40: the start of a name; else an offset anywhere, up to a little past the end
    records = [(kind, starts[pick % len(starts)] if pick < 40 else (pick - 40) * str_len // 18)
               for kind, pick in picks]
    blob = _blob(names, records, little=little, terminated=terminated, trailer=trailer,
                 no_strings=no_strings == 0)
    k = B.BTF(memoryview(blob) if as_view else blob)
    decoded = [n.decode("utf-8", "replace") for n in names]
    wanted = {B.essential_name(n) for n in decoded} | set(decoded) | extra
    wanted |= {n + "___f" for n in decoded[:2]} | set(B._LONG_ALIASES)
    compiled, python = _collect_both(k, wanted)
    assert compiled == python
    event("error" if isinstance(python, tuple) else
          "hits" if isinstance(python, dict) and any(python.values()) else "no hits")


@needs_native
def test_names_finds_flavours_and_odd_bytes_as_python_does() -> None:
    """A few cases spelled out (the random test covers them among many): the flavour cut,
    underscores that are no flavour, a name with invalid UTF-8, a name past the section."""
    names = [b"task_struct___v1", b"task_struct", b"x___", b"a____b", b"caf\xc3\xa9___1",
             b"bad\xff___z", b"bad\xef\xbf\xbd___y", b"nope"]
    starts = [1]
    for n in names[:-1]:
        starts.append(starts[-1] + len(n) + 1)
    records = [(B.STRUCT, s) for s in starts] + [(B.FUNC, starts[1])]
    k = B.BTF(_blob(names, records, little=True, terminated=True, trailer=b"",
                    no_strings=False))
    wanted = {"task_struct", "x___", "a____b", "café", "bad\ufffd", "a", "x"}
    compiled, python = _collect_both(k, wanted)
    # "bad\xff" decodes to "bad\ufffd" but fails the prefix filter, which compares bytes:
    # only the name spelled with U+FFFD's own bytes is found, by both.
    assert compiled == python == {"task_struct": [1, 2], "x___": [3], "a____b": [4],
                                  "café": [5], "bad\ufffd": [7], "a": [], "x": []}
    past = B.BTF(_blob([b"s"], [(B.INT, 1), (B.STRUCT, 3)], little=True, terminated=True,
                       trailer=b"", no_strings=False))
    compiled, python = _collect_both(past, {"s"})
    assert compiled == python == ("error", "a BTF type's name offset is past the string "
                                  "section")
