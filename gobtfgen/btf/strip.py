"""A kernel BTF cut down to what CO-RE can reach: the form the kernel cache keeps.

More than half of a kernel's BTF can never matter to a CO-RE relocation: its FUNC records
(tens of thousands, one per kernel function), their FUNC_PROTOs and parameter names, VAR and
DATASEC records of per-cpu variables, DECL_TAGs, and the pointers and arrays only they use.
libbpf finds a relocation's candidates by name among the types of the local type's kind, and
every type a relocation then looks at (members, their types, pointer targets, array elements,
enumerators) is reachable from a candidate by type references. So every type the minimizer
can touch is reachable from a named-kind record (NAMED_TYPE_KINDS: INT, STRUCT, UNION, ENUM,
ENUM64, FWD, TYPEDEF, FLOAT, TYPE_TAG), as long as no relocation's local type is a named
record of another kind (a FUNC, say), which `serves` checks per run.

strip() keeps those records verbatim and replaces every other one by a `void *` record (3
words), so type ids do not move: minimized output, error messages and type ids in reports are
the same as from the full BTF. Strings only the dropped records use are zeroed in place, so
string offsets do not move either. The zero runs and the identical placeholder records cost
almost nothing compressed: on the sample's kernels the cache entry (zstd 1) is 55% of the full
BTF's, which takes the cache under the archive's `.tar.xz` size, and it is faster both to write
and to read. The full BTF's checksum (PreferEmbedded) is taken before stripping.

strip() is the compiled version (gobtfgen/_native.c), about a millisecond a kernel; without
it the cache keeps the full BTF (strip_reference, the same in Python, takes longer than the
cache saves: it is the tests' reference). tests/test_strip.py checks that both give the same
bytes and that minimizing either gives the same output on every sample kernel.
"""

from __future__ import annotations

import struct
import sys

from gobtfgen import btf as B
from gobtfgen.btf.native import native

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads this name)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from gobtfgen.btf.ext import ParsedObject

_PLACEHOLDER = (0, B.PTR << 24, 0)  # `void *`: anonymous PTR to type 0


def strip(raw: bytes) -> bytes | None:
    """The stripped form of a kernel BTF, or None when it is kept whole.

    None: no compiled module, or a layout other than the kernel's usual one (24-byte header,
    this machine's byte order, types before strings), or a malformed blob (the minimizer then
    reports it from the full BTF, as before).
    """
    if native is None:
        return None
    try:
        out: bytes | None = native.strip(raw)
    except ValueError:
        return None
    return out


def serves(objects: Iterable[ParsedObject]) -> bool:
    """Whether a stripped kernel answers every relocation of these objects as the full one:
    no relocation searches candidates of a kind strip() does not keep by name."""
    from gobtfgen.btf.ext import TYPE_ID_LOCAL

    for obj in objects:
        lb = obj.btf
        for relo in obj.relos:
            if relo.kind == TYPE_ID_LOCAL or not 0 < relo.type_id < len(lb):
                continue
            if lb.name_off(relo.type_id) and lb.kind(relo.type_id) not in B.NAMED_TYPE_KINDS:
                return False
    return True


def strip_reference(raw: bytes) -> bytes | None:
    """strip() in Python: the reference the compiled code is tested against. Raises BTFError
    on a malformed blob where strip() returns None."""
    if sys.byteorder != "little" or len(raw) < B.HEADER_LEN:
        return None
    h = B.parse_header(raw)
    if not h.little_endian or h.hdr_len != B.HEADER_LEN or h.type_off != 0 \
            or h.str_off != h.type_len or B.HEADER_LEN + h.type_len + h.str_len != len(raw):
        return None
    k = B.BTF(raw)
    count = len(k)
    keep = bytearray(count)
    keep[0] = 1
    stack = [t for t in range(1, count) if k.kind(t) in B.NAMED_TYPE_KINDS]
    for t in stack:
        keep[t] = 1
    while stack:
        for ref in k.referenced_ids(stack.pop()):
            if ref >= count:
                raise B.BTFError(f"BTF type refers to missing type {ref}")
            if not keep[ref]:
                keep[ref] = 1
                stack.append(ref)
    src = k.strings
    dst = bytearray(len(src))
    words: list[int] = []
    for t in range(1, count):
        if not keep[t]:
            words.extend(_PLACEHOLDER)
            continue
        rec = k.record(t)
        words.extend(rec)
        kind = k.kind(t)
        stride = {B.STRUCT: 3, B.UNION: 3, B.ENUM64: 3, B.ENUM: 2, B.FUNC_PROTO: 2}.get(kind)
        offs = [rec[0]] + ([rec[3 + j * stride] for j in range(k.vlen(t))] if stride else [])
        for off in offs:
            if off >= len(src) and off:
                raise B.BTFError(f"BTF string offset {off} is past the string section")
            if off and not dst[off] and src[off]:
                end = src.find(b"\0", off)
                if end < 0:
                    raise B.BTFError(f"BTF string at {off} is not terminated")
                dst[off:end] = src[off:end]
    types = struct.pack(f"<{len(words)}I", *words)
    head = struct.pack("<HBBIIIII", B.MAGIC, 1, raw[3], B.HEADER_LEN, 0, len(types),
                       len(types), h.str_len)
    return head + types + bytes(dst)
