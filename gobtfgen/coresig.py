"""The CO-RE signature of a BPF object: what of it decides a minimized BTF, as one sha256.

It hashes the CO-RE relocations (kind, access string, in order) and the local types they name,
canonicalized so that local type ids renumbered by an unrelated edit do not change it.
Instruction offsets and program code are deliberately left out: the minimized BTF depends
only on what the relocations ask for. generate keys its cache by it (gobtfgen.objects), and
`gobtfgen minimize` its kept results (gobtfgen.minimize.replay), which is why this module
imports nothing but struct: a repeated one-kernel command cannot afford hashlib, dataclasses
or the error types' modules.
"""

from __future__ import annotations

import struct

from gobtfgen.sha256 import sha256

# typing.TYPE_CHECKING without importing typing (mypy reads this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

FIX_OBJECT = ("pass a BPF object built by clang -target bpf with -g (bpf2go's *_bpfel.o)")


class CoreSignatureError(ValueError):
    """The object's .BTF or .BTF.ext cannot be read (the message names the file and the fix;
    gobtfgen.objects raises it as an InputError)."""


_REF_KINDS = {2, 8, 9, 10, 11, 12, 14, 17, 18}  # kinds whose size_or_type is a type id


class _LocalBTF:
    """Just enough of a BTF reader for small object BTFs: records by id, names, references."""

    def __init__(self, blob: bytes, *, little: bool, what: object) -> None:
        self.e = "<" if little else ">"
        try:
            (magic, _v, _f, hdr_len, type_off, type_len, str_off,
             str_len) = struct.unpack_from(self.e + "HBBIIIII", blob)
        except struct.error:
            raise CoreSignatureError(f"{what}: .BTF is truncated; {FIX_OBJECT}") from None
        if magic != 0xEB9F:
            raise CoreSignatureError(f"{what}: .BTF has a bad magic; {FIX_OBJECT}")
        self.types = blob[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = blob[hdr_len + str_off: hdr_len + str_off + str_len]
        self.offsets = [0]  # id 0 is void
        pos = 0
        while pos + 12 <= len(self.types):
            self.offsets.append(pos)
            _name, info, _st = struct.unpack_from(self.e + "III", self.types, pos)
            pos += 12 + self._extra(info)
        self.what = what

    @staticmethod
    def _extra(info: int) -> int:
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        return {1: 4, 3: 12, 4: 12 * vlen, 5: 12 * vlen, 6: 8 * vlen, 13: 8 * vlen, 14: 4,
                15: 12 * vlen, 17: 4, 19: 12 * vlen}.get(kind, 0)

    def name(self, off: int) -> str:
        end = self.strings.find(b"\0", off)
        return self.strings[off:end if end >= 0 else None].decode("utf-8", "replace")

    def record(self, type_id: int) -> tuple[int, int, int, list[int]]:
        """(name_off, info, size_or_type, trailing u32 words) of a type."""
        if type_id <= 0 or type_id >= len(self.offsets):
            raise CoreSignatureError(f"{self.what}: .BTF.ext refers to type {type_id}, past .BTF; "
                             f"{FIX_OBJECT}")
        pos = self.offsets[type_id]
        name, info, st = struct.unpack_from(self.e + "III", self.types, pos)
        n = self._extra(info) // 4
        words = list(struct.unpack_from(self.e + f"{n}I", self.types, pos + 12))
        return name, info, st, words


def _canonical(btf: _LocalBTF, roots: Iterable[int]) -> tuple[dict[int, int], list[str]]:
    """Number the types reachable from roots in visit order; describe each by names and
    canonical numbers only, so the description is independent of local type ids."""
    numbering: dict[int, int] = {0: 0}
    lines: list[str] = []
    stack = [r for r in roots][::-1]
    while stack:
        tid = stack.pop()
        if tid in numbering:
            continue
        numbering[tid] = len(numbering)
        name_off, info, st, words = btf.record(tid)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        refs: list[int] = []
        desc: list[object] = [kind, btf.name(name_off), info & 0x8000FFFF]
        if kind in _REF_KINDS:
            refs.append(st)
        else:
            desc.append(st)
        if kind == 3:  # array: elem, index, nelems
            refs += words[:2]
            desc.append(words[2])
        elif kind in (4, 5):  # members: name, type, offset
            for i in range(vlen):
                desc += [btf.name(words[3 * i]), words[3 * i + 2]]
                refs.append(words[3 * i + 1])
        elif kind == 6:
            desc += [(btf.name(words[2 * i]), words[2 * i + 1]) for i in range(vlen)]
        elif kind == 19:
            desc += [(btf.name(words[3 * i]), words[3 * i + 1], words[3 * i + 2])
                     for i in range(vlen)]
        elif kind == 15:  # datasec: (var type, offset, size)
            for i in range(vlen):
                refs.append(words[3 * i])
                desc += words[3 * i + 1: 3 * i + 3]
        elif kind == 13:
            for i in range(vlen):
                desc.append(btf.name(words[2 * i]))
                refs.append(words[2 * i + 1])
        else:
            desc += words
        desc.append(refs)  # resolved to canonical numbers below
        lines.append(repr(desc))
        stack.extend(r for r in reversed(refs) if r not in numbering)
    # Second pass: replace the reference lists by canonical numbers.
    out = []
    for line in lines:
        head, _, refs_repr = line.rpartition(", [")
        ids = [int(x) for x in refs_repr.rstrip("]").split(", ") if x]
        out.append(head + ", " + repr([numbering.get(i, -1) for i in ids]) + "]")
    return numbering, out


def core_signature(btf_blob: bytes, ext: bytes, *, little: bool, what: object) -> tuple[int, str]:
    """(number of CO-RE relocations, sha256 of their canonical content)."""
    e = "<" if little else ">"
    try:
        magic, _v, _f, hdr_len = struct.unpack_from(e + "HBBI", ext)
    except struct.error:
        raise CoreSignatureError(f"{what}: .BTF.ext is truncated; {FIX_OBJECT}") from None
    if magic != 0xEB9F:
        raise CoreSignatureError(f"{what}: .BTF.ext has a bad magic; {FIX_OBJECT}")
    if hdr_len < 32:
        return 0, ""  # no core_relo section: an object without CO-RE relocations
    core_off, core_len = struct.unpack_from(e + "II", ext, 24)
    sub = ext[hdr_len + core_off: hdr_len + core_off + core_len]
    if core_len == 0 or len(sub) < 4:
        return 0, ""
    btf = _LocalBTF(btf_blob, little=little, what=what)
    (rec_size,) = struct.unpack_from(e + "I", sub)
    if rec_size < 16:
        raise CoreSignatureError(f"{what}: .BTF.ext CO-RE record size {rec_size} < 16; "
                                 f"{FIX_OBJECT}")
    relos: list[tuple[int, int, str]] = []  # (type id, kind, access string)
    pos = 4
    while pos + 8 <= len(sub):
        _sec, count = struct.unpack_from(e + "II", sub, pos)
        pos += 8
        for _ in range(count):
            if pos + rec_size > len(sub):
                raise CoreSignatureError(f"{what}: .BTF.ext CO-RE records run past the section; "
                                 f"{FIX_OBJECT}")
            _insn, type_id, access_off, kind = struct.unpack_from(e + "IIII", sub, pos)
            relos.append((type_id, kind, btf.name(access_off)))
            pos += rec_size
    numbering, types = _canonical(btf, (t for t, _, _ in relos))
    h = sha256()
    h.update(b"gobtfgen-core-signature-1\0" + (b"el" if little else b"eb"))
    for type_id, kind, access in relos:
        h.update(f"{kind}:{numbering[type_id]}:{access}\n".encode())
    h.update(b"\0types\0")
    for line in types:
        h.update(line.encode() + b"\n")
    return len(relos), h.hexdigest()
