"""Split BTF (kernel modules) and merging it into one BTF with its vmlinux base.

A module's BTF (its `.BTF` section, or /sys/kernel/btf/<module>) is split BTF, as libbpf's
btf__parse_split reads it: its first type has id `len(base)` (the base's type count plus void),
and a name offset below the base's string length names a base string, any other one the
module's string `offset - base_str_len` (the module's string section has no leading NUL of
its own). Type ids below `len(base)` are base types.

merge() writes vmlinux's types first with their ids and string offsets unchanged, then each
module's own types with ids and string offsets remapped. A module type whose shape is the same
all the way down as a type already merged (the base's, or an earlier module's copy of a header
type both modules use) is resolved to that type, so the merged BTF has no needless duplicates;
which merged ids each module has is recorded (Merged.modules), since libbpf's candidate order
(vmlinux first, modules only when vmlinux has none) needs to know where a type came from.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gobtfgen.btf import (
    _NATIVE_LE,
    _REF_KINDS,
    ARRAY,
    BTF,
    DATASEC,
    ENUM,
    ENUM64,
    FUNC_PROTO,
    HEADER_LEN,
    MAGIC,
    STRUCT,
    UNION,
    BTFError,
    index_types,
    parse_header,
)


class SplitError(BTFError):
    """A module's split BTF does not fit its base (the message says why and what to do)."""


@dataclass
class Split:
    """One module's split BTF, framed against its base."""

    name: str
    words: Sequence[int]
    offsets: list[int]  # offsets[i]: word offset of local type i (id = start_id + i)
    strings: bytes
    start_id: int
    start_str: int

    def __len__(self) -> int:
        return len(self.offsets)

    def kind(self, i: int) -> int:
        return (self.words[self.offsets[i] + 1] >> 24) & 0x1F

    def record(self, i: int) -> list[int]:
        start = self.offsets[i]
        end = self.offsets[i + 1] if i + 1 < len(self.offsets) else len(self.words)
        return list(self.words[start:end])


def _fields(kind: int, vlen: int) -> tuple[list[int], list[int]]:
    """Word indices (in a record) holding name offsets and holding type ids, for one kind."""
    names = [0]
    ids: list[int] = [2] if kind in _REF_KINDS else []
    if kind == ARRAY:
        ids += [3, 4]
    elif kind in (STRUCT, UNION):
        for k in range(vlen):
            names.append(3 + 3 * k)
            ids.append(4 + 3 * k)
    elif kind in (ENUM, FUNC_PROTO):
        for k in range(vlen):
            names.append(3 + 2 * k)
            if kind == FUNC_PROTO:
                ids.append(4 + 2 * k)
    elif kind == ENUM64:
        names += [3 + 3 * k for k in range(vlen)]
    elif kind == DATASEC:
        ids += [3 + 3 * k for k in range(vlen)]
    # INT, VAR, DECL_TAG, FLOAT, FWD: no further names or ids.
    return names, ids


def _native_words(data: bytes, little: bool, start: int, length: int) -> Sequence[int]:
    raw = memoryview(data)[start:start + length]
    if little == _NATIVE_LE:
        return raw.cast("I")
    words = array("I")
    words.frombytes(raw)
    words.byteswap()
    return words


def parse_split(data: bytes, base: BTF, *, name: str) -> Split:
    """Frame a module's split BTF against base; SplitError when it cannot be that base's.

    A split BTF does not name its base, so the check is what a wrong base breaks: every type
    id must exist, and every name offset must start a string (a base of another build has
    another string section, so offsets into it land mid-string, or past the end).
    """
    try:
        h = parse_header(data)
    except BTFError as exc:
        raise SplitError(f"{name}: not BTF ({exc})") from None
    if h.little_endian != base.header.little_endian:
        raise SplitError(f"{name}: its BTF and the base's differ in byte order; pass the "
                         "vmlinux this module was built for")
    words = _native_words(data, h.little_endian, h.hdr_len + h.type_off, h.type_len)
    try:
        offsets = list(index_types(words).offsets[1:])
    except BTFError as exc:
        raise SplitError(f"{name}: damaged split BTF ({exc})") from None
    s0 = h.hdr_len + h.str_off
    strings = bytes(data[s0:s0 + h.str_len])
    split = Split(name=name, words=words, offsets=offsets, strings=strings, start_id=len(base),
                  start_str=len(base.strings))
    _check_fits(split, base)
    return split


def _check_fits(split: Split, base: BTF) -> None:
    base_strs = base.strings
    nbase = len(base_strs)
    total = split.start_id + len(split)
    local = split.strings
    hint = (f"{split.name}: its split BTF does not match this vmlinux BTF (%s); pass the "
            "vmlinux of the kernel build the module belongs to")
    w = split.words
    for i, at in enumerate(split.offsets):
        info = w[at + 1]
        kind = (info >> 24) & 0x1F
        names, ids = _fields(kind, info & 0xFFFF)
        for k in ids:
            if w[at + k] >= total:
                raise SplitError(hint % f"type {split.start_id + i} refers to type "
                                        f"{w[at + k]}, past the {total - 1} base and module types")
        for k in names:
            off = w[at + k]
            if off == 0:
                continue
            if off < nbase:
                ok = base_strs[off - 1] == 0
            else:
                rel = off - nbase
                ok = rel < len(local) and (rel == 0 or local[rel - 1] == 0)
            if not ok:
                raise SplitError(hint % f"type {split.start_id + i} has name offset {off}, "
                                        "not the start of a string")


@dataclass
class Merged:
    btf: bytes
    base_types: int  # ids 1 .. base_types - 1 are vmlinux's
    modules: dict[str, list[int]] = field(default_factory=dict)  # module -> merged ids, ascending

    def sidecar(self) -> dict[str, object]:
        """JSON-able record of which merged ids each module has, as id ranges."""
        return {"base_types": self.base_types,
                "modules": {m: _ranges(ids) for m, ids in self.modules.items()}}


def _ranges(ids: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in ids:
        if out and out[-1][1] + 1 == i:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def ranges_to_ids(ranges: Iterable[Sequence[int]]) -> list[int]:
    return [i for lo, hi in ranges for i in range(lo, hi + 1)]


class _Out:
    """The merged blob under construction: base types and strings verbatim, then appended."""

    def __init__(self, base: BTF) -> None:
        self.base = base
        self.nbase = len(base)
        self.words = array("I", base.words)
        self.offsets = list(base.offsets)
        self.strs = bytearray(base.strings)
        self.new_strs: dict[bytes, int] = {}
        self._base_names: dict[bytes, list[int]] | None = None
        self.names: dict[bytes, list[int]] = {}  # appended types by name
        self.anon: dict[tuple[int, ...], int] = {}  # appended anonymous records -> id

    def str_bytes(self, off: int) -> bytes:
        end = self.strs.index(0, off)
        return bytes(self.strs[off:end])

    def add_str(self, s: bytes) -> int:
        if not s:
            return 0
        off = self.new_strs.get(s)
        if off is None:
            off = len(self.strs)
            self.strs += s + b"\0"
            self.new_strs[s] = off
        return off

    def record(self, tid: int) -> Sequence[int]:
        start = self.offsets[tid]
        end = self.offsets[tid + 1] if tid + 1 < len(self.offsets) else len(self.words)
        return self.words[start:end]

    def named(self, name: bytes) -> list[int]:
        """Ids of base and appended types with this exact name."""
        if self._base_names is None:
            idx: dict[bytes, list[int]] = {}
            b = self.base
            strs = b.strings
            for tid in range(1, len(b)):
                off = b.name_off(tid)
                if off:
                    idx.setdefault(strs[off:strs.index(0, off)], []).append(tid)
            self._base_names = idx
        return self._base_names.get(name, []) + self.names.get(name, [])

    def append(self, rec: list[int], name: bytes) -> int:
        tid = len(self.offsets)
        self.offsets.append(len(self.words))
        self.words.extend(rec)
        if name:
            self.names.setdefault(name, []).append(tid)
        else:
            self.anon.setdefault(tuple(rec), tid)
        return tid

    def to_bytes(self) -> bytes:
        words = array("I", self.words)
        if self.base.header.little_endian != _NATIVE_LE:
            words.byteswap()
        types = words.tobytes()
        order = "<" if self.base.header.little_endian else ">"
        hdr = struct.pack(order + "HBBIIIII", MAGIC, 1, 0, HEADER_LEN, 0, len(types),
                          len(types), len(self.strs))
        return hdr + types + bytes(self.strs)


def _module_str(split: Split, off: int) -> bytes:
    rel = off - split.start_str
    end = split.strings.find(b"\0", rel)
    return split.strings[rel:end if end >= 0 else len(split.strings)]


def _merge_one(out: _Out, split: Split) -> list[int]:
    """Append split's types to out; return the merged id of each of its types, in order."""
    start = split.start_id
    n = len(split)

    def sname(off: int) -> bytes:
        if off < split.start_str:
            return bytes(out.strs[off:out.strs.index(0, off)]) if off else b""
        return _module_str(split, off)

    layouts: list[tuple[list[int], list[int]]] = []
    for i in range(n):
        info = split.words[split.offsets[i] + 1]
        layouts.append(_fields((info >> 24) & 0x1F, info & 0xFFFF))
    final: dict[int, int] = {}  # module id -> merged id (pre-existing types only, pass 1)

    def equiv(m: int, c: int, hyp: dict[int, int]) -> bool:
        """Whether module type m and merged type c have one shape all the way down (assuming
        the pairs in hyp do: a cycle back to a pair under test is consistent)."""
        if m < start:
            return m == c
        if c < 1:
            return False
        got = final.get(m, hyp.get(m))
        if got is not None:
            return got == c
        mrec = split.record(m - start)
        crec = out.record(c)
        if len(mrec) != len(crec) or mrec[1] != crec[1]:
            return False
        names, ids = layouts[m - start]
        skip = set(names) | set(ids)
        if any(mrec[k] != crec[k] for k in range(len(mrec)) if k not in skip):
            return False
        for k in names:
            if sname(mrec[k]) != (out.str_bytes(crec[k]) if crec[k] else b""):
                return False
        hyp[m] = c
        return all(equiv(mrec[k], crec[k], hyp) for k in ids)

    # Pass 1: named types against same-named merged types (base and earlier modules); their
    # anonymous parts come with them through equiv.
    for i in range(n):
        m = start + i
        if m in final:
            continue
        nm = sname(split.words[split.offsets[i]])
        if not nm:
            continue
        for c in out.named(nm):
            hyp: dict[int, int] = {}
            try:
                same = equiv(m, c, hyp)
            except RecursionError:
                # A chain of module types deeper than Python's stack: kept apart, which costs
                # a duplicate, never a wrong merge.
                same = False
            if same:
                final.update(hyp)
                break
    # Anonymous types left (a pointer to a deduplicated struct, say) match an appended
    # anonymous record once their references are known; repeat until nothing changes.
    changed = True
    while changed:
        changed = False
        for i in range(n):
            m = start + i
            if m in final or sname(split.words[split.offsets[i]]):
                continue
            rec = split.record(i)
            _, ids = layouts[i]
            mapped = [rec[k] if rec[k] < start else final.get(rec[k], -1) for k in ids]
            if -1 in mapped:
                continue
            for k, v in zip(ids, mapped, strict=True):
                rec[k] = v
            hit = out.anon.get(tuple(rec))
            if hit is not None:
                final[m] = hit
                changed = True
    # Pass 2: the rest get new ids in their module order, then their records are written.
    result: list[int] = []
    nxt = len(out.offsets)
    newmap: dict[int, int] = {}
    for i in range(n):
        m = start + i
        if m in final:
            result.append(final[m])
        else:
            newmap[m] = nxt
            result.append(nxt)
            nxt += 1

    def tid(t: int) -> int:
        return t if t < start else result[t - start]

    for i in range(n):
        m = start + i
        if m not in newmap:
            continue
        rec = split.record(i)
        names, ids = layouts[i]
        nm = sname(rec[0])
        for k in names:
            off = rec[k]
            rec[k] = off if off < split.start_str else out.add_str(_module_str(split, off))
        for k in ids:
            rec[k] = tid(rec[k])
        got = out.append(rec, nm)
        assert got == newmap[m]
    return result


def merge(base_blob: bytes, modules: Sequence[tuple[str, bytes]]) -> Merged:
    """vmlinux BTF plus the split BTF of each (name, blob) module, as one BTF."""
    base = BTF(base_blob)
    out = _Out(base)
    by_module: dict[str, list[int]] = {}
    for name, blob in modules:
        split = parse_split(blob, base, name=name)
        by_module[name] = sorted(_merge_one(out, split))
    return Merged(btf=out.to_bytes(), base_types=len(base), modules=by_module)


def module_of(merged_modules: dict[str, list[int]]) -> Callable[[int], list[str]]:
    """A lookup: merged id -> the modules that have it (empty: a vmlinux type)."""
    owner: dict[int, list[str]] = {}
    for m, ids in merged_modules.items():
        for i in ids:
            owner.setdefault(i, []).append(m)
    return lambda tid: owner.get(tid, [])
