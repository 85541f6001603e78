"""Raw BTF: a lazy, indexed reader for big kernel blobs and a writer for minimized ones.

A kernel BTF holds 35k to 560k types. The reader frames every record once (index_types: a
word loop over a view of the type section, which also notes the records of named type kinds)
and decodes records only when asked: the minimizer touches a few hundred types per kernel, so
materializing the whole graph would cost more than the rest of the work together. The framing
(a TypeIndex) can come from the caller instead, as the cache keeps it (gobtfgen.btf.index).
Candidate search by name looks at the named records only, for the names announced with
`BTF(..., wanted=...)`; a full name index is built only when somebody asks for another name.
"""

from __future__ import annotations

import struct
import sys

from gobtfgen.btf.native import native as _native
from gobtfgen.record import Record

# `gobtfgen minimize` imports this module in every process: collections.abc (not the
# _collections_abc os has loaded) costs it 2-4 ms. typing.TYPE_CHECKING without importing
# typing (mypy reads this name). array is imported where it is used, for the same reason: the
# array module registers its type with collections.abc.MutableSequence when it is imported.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from array import array
    from collections.abc import Collection, Iterable, Sequence
    from typing import TypeGuard

MAGIC = 0xEB9F
HEADER_LEN = 24

# Kinds (include/uapi/linux/btf.h).
UNKN = 0
INT = 1
PTR = 2
ARRAY = 3
STRUCT = 4
UNION = 5
ENUM = 6
FWD = 7
TYPEDEF = 8
VOLATILE = 9
CONST = 10
RESTRICT = 11
FUNC = 12
FUNC_PROTO = 13
VAR = 14
DATASEC = 15
FLOAT = 16
DECL_TAG = 17
TYPE_TAG = 18
ENUM64 = 19

KIND_NAMES = {
    UNKN: "UNKN", INT: "INT", PTR: "PTR", ARRAY: "ARRAY", STRUCT: "STRUCT", UNION: "UNION",
    ENUM: "ENUM", FWD: "FWD", TYPEDEF: "TYPEDEF", VOLATILE: "VOLATILE", CONST: "CONST",
    RESTRICT: "RESTRICT", FUNC: "FUNC", FUNC_PROTO: "FUNC_PROTO", VAR: "VAR",
    DATASEC: "DATASEC", FLOAT: "FLOAT", DECL_TAG: "DECL_TAG", TYPE_TAG: "TYPE_TAG",
    ENUM64: "ENUM64",
}

INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

# Words after the 3-word common header, and words per vlen entry, by kind.
_EXTRA = {INT: 1, ARRAY: 3, VAR: 1, DECL_TAG: 1}
_PER_VLEN = {STRUCT: 3, UNION: 3, ENUM: 2, FUNC_PROTO: 2, DATASEC: 3, ENUM64: 3}
# Kinds whose size_or_type word is a type id (libbpf's btf_type_visit_type_ids).
_REF_KINDS = frozenset({PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR,
                        DECL_TAG, TYPE_TAG})
# Modifiers libbpf skips in skip_mods_and_typedefs (btf_is_mod includes TYPE_TAG).
MODS = frozenset({VOLATILE, CONST, RESTRICT, TYPE_TAG})
_MAX_KIND = 19

# The info word's top byte is kind (bits 24-28) and kind_flag (bit 31); bits 29-30 are zero in
# every UAPI so far. Indexing tables by that byte makes the walk one lookup per record.
_SKIP = [0] * 256
_MUL = [0] * 256
for _hi in range(256):
    _k = _hi & 0x1F
    _SKIP[_hi] = 3 + _EXTRA.get(_k, 0)
    _MUL[_hi] = _PER_VLEN.get(_k, 0)

_NATIVE_LE = sys.byteorder == "little"
_LONG_ALIASES = ("long", "long int", "int long", "unsigned long", "long unsigned",
                 "unsigned long int", "unsigned int long", "long unsigned int",
                 "long int unsigned", "int unsigned long", "int long unsigned")


def _covering_prefixes(names: Collection[str]) -> tuple[bytes, ...]:
    """Few byte prefixes such that every name starts with one (each costs a compare per type).

    `long` and its aliases (always wanted, for ptr_size) become b"long", b"int ", b"unsigned ".
    """
    out: set[bytes] = set()
    for n in names:
        if n in _LONG_ALIASES:
            out.add(n.encode().split(b" ")[0] + (b"" if n.startswith("long") else b" "))
        elif n:
            out.add(n.encode())
    kept = sorted(out)
    # Drop a prefix that a shorter kept one already covers (sorted order puts it right after).
    reduced: list[bytes] = []
    for p in kept:
        if not reduced or not p.startswith(reduced[-1]):
            reduced.append(p)
    return tuple(reduced)


class BTFError(ValueError):
    """The blob is not valid BTF (the message says where)."""


def essential_name_len(name: str) -> int:
    """libbpf's bpf_core_essential_name_len: the length without a trailing `___flavor`.

    A flavour separator is `X___Y` with X and Y not underscores; the last one wins.
    """
    n = len(name)
    # rfind walks the candidates from the right in C: most names have none, so this is one
    # call where a character loop cost microseconds per name.
    j = name.rfind("___")
    while j > 0:
        if name[j - 1] != "_" and j + 3 < n and name[j + 3] != "_":
            return j
        j = name.rfind("___", 0, j + 2)
    return n


def essential_name(name: str) -> str:
    return name[:essential_name_len(name)]


class Header(Record):
    __slots__ = ("little_endian", "hdr_len", "type_off", "type_len", "str_off", "str_len")

    def __init__(self, *, little_endian: bool, hdr_len: int, type_off: int, type_len: int,
                 str_off: int, str_len: int) -> None:
        self.little_endian = little_endian
        self.hdr_len = hdr_len
        self.type_off = type_off
        self.type_len = type_len
        self.str_off = str_off
        self.str_len = str_len


def parse_header(data: bytes | memoryview) -> Header:
    if len(data) < HEADER_LEN:
        raise BTFError(f"BTF blob of {len(data)} bytes is shorter than its header")
    magic_le = struct.unpack_from("<H", data, 0)[0]
    if magic_le == MAGIC:
        order = "<"
    elif magic_le == 0x9FEB:
        order = ">"
    else:
        raise BTFError(f"bad BTF magic {magic_le:#06x} (expected 0xeb9f)")
    version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        order + "BBIIIII", data, 2)
    if version != 1:
        raise BTFError(f"unsupported BTF version {version}")
    # libbpf >= 1.8 writes a 32-byte header (layout_off, layout_len); honour any hdr_len.
    if hdr_len < HEADER_LEN or hdr_len > len(data):
        raise BTFError(f"bad BTF header length {hdr_len}")
    body = len(data) - hdr_len
    if type_off + type_len > body or str_off + str_len > body:
        raise BTFError("BTF type or string section extends past the end of the blob")
    if type_off % 4 or type_len % 4:
        raise BTFError("BTF type section is not 4-byte aligned")
    return Header(little_endian=order == "<", hdr_len=hdr_len, type_off=type_off,
                  type_len=type_len, str_off=str_off, str_len=str_len)


# Kinds a CO-RE candidate search can ask for by name: the named type kinds. FUNC, FUNC_PROTO,
# VAR, DATASEC and DECL_TAG are never a relocation's local type (clang emits type ids of data
# types), so the walk skips their names; a search for one of them takes the full name scan.
NAMED_TYPE_KINDS = frozenset({INT, STRUCT, UNION, ENUM, FWD, TYPEDEF, FLOAT, TYPE_TAG, ENUM64})


class TypeIndex(Record):
    """Where each record starts, and which records have a named type kind.

    offsets[id] is the word offset of type `id` in the type section (offsets[0] = 0 stands for
    void); named_at[] lists, ascending, the word offsets of the records whose kind is in
    NAMED_TYPE_KINDS (offsets, not ids: the walk appends them cheaper, and the few that match a
    name get their id by bisection). Both depend only on the type section, so
    gobtfgen.btf.index keeps them on disk next to a cached kernel.
    """

    __slots__ = ("offsets", "named_at")

    def __init__(self, offsets: Sequence[int], named_at: Sequence[int]) -> None:
        self.offsets = offsets
        self.named_at = named_at

    def __hash__(self) -> int:
        return id(self)  # the sequences may be lists


def _is_array_or_view(words: Sequence[int]) -> TypeGuard[array[int] | memoryview]:
    """isinstance(words, array | memoryview), without importing array (see the imports): an
    array exists only once its module has been imported."""
    if isinstance(words, memoryview):
        return True
    arrays = sys.modules.get("array")
    return arrays is not None and isinstance(words, arrays.array)


def index_types(words: Sequence[int]) -> TypeIndex:
    """Frame every record of a type section (native-order words): the hot loop of the minimizer.

    Compiled (gobtfgen/_native.c) when the module was built, else index_types_python.
    """
    if _native is not None and _is_array_or_view(words):
        # ~1 ms for a 100k-type kernel, against 10 in Python; the same offsets and errors.
        # Views of the bytes returned, not arrays: they index as fast, copy nothing, and
        # importing array costs a cold `gobtfgen minimize` 2-4 ms (collections.abc).
        try:
            offs_b, named_b = _native.frame(words)
        except ValueError as exc:
            raise BTFError(str(exc)) from None
        return TypeIndex(offsets=memoryview(offs_b).cast("I"),
                         named_at=memoryview(named_b).cast("I"))
    return index_types_python(words)


def index_types_python(words: Sequence[int]) -> TypeIndex:
    """index_types in Python: the fallback, and the reference the compiled loop is tested on.

    A record's length depends only on its info word, and a kernel has a few hundred distinct
    info words, so the length is memoized per info word; records of a named type kind memoize
    it negated, which is how the loop notices them without a second lookup. The loop has no
    `i < n` test: reading past the end raises IndexError, and the offset appended last must
    then be exactly the end of the section. (Measured on a 101k-type kernel: testing each
    record's name in this loop, as an earlier version did, cost 4 ms more.)
    """
    # The info word of the record at word i is after[i]. A memoryview, not a slice: copying
    # 3 MB into fresh pages costs more (4 ms measured) than indexing a view does.
    after = memoryview(words)[1:] if _is_array_or_view(words) else words[1:]
    offs = [0]  # id 0 is void and has no record
    ap = offs.append
    named_at: list[int] = []
    nap = named_at.append
    steps: dict[int, int] = {}
    i = 0
    while True:
        try:
            while True:
                ap(i)
                step = steps[after[i]]
                if step < 0:
                    nap(i)
                    i -= step
                else:
                    i += step
        except KeyError:
            offs.pop()  # this record is framed again once its info word is known
            info = after[i]
            kind = (info >> 24) & 0x1F
            if kind > _MAX_KIND or info & 0x60000000:
                # An unknown kind has an unknown length: nothing after it can be framed.
                raise BTFError(f"BTF type {len(offs)} has unknown kind "
                               f"{(info >> 24) & 0x7F}") from None
            step = _SKIP[info >> 24] + (info & 0xFFFF) * _MUL[info >> 24]
            steps[info] = -step if kind in NAMED_TYPE_KINDS else step
        except IndexError:
            break
    if offs.pop() != len(words):
        raise BTFError(f"BTF type section ends inside type {len(offs) - 1}")
    return TypeIndex(offsets=offs, named_at=named_at)


class BTF:
    """A read-only view of one raw BTF blob; type ids are 1-based, 0 is void.

    `wanted` lists names (essential names, flavour stripped) whose candidate types the caller
    will ask for with `by_essential_name`; they are found among the named types the walk
    collects. `index` is this blob's TypeIndex when the caller has it (from the kernel cache):
    then nothing is walked.
    """

    def __init__(self, data: bytes | memoryview, *, wanted: Collection[str] = (),
                 ptr_size: int | None = None, index: TypeIndex | None = None) -> None:
        self.header = h = parse_header(data)
        base = h.hdr_len
        # Strings are read in place from a bytes blob (offset _sbase), copied only from other
        # buffers: a kernel's 2 MB string section in fresh pages costs up to a millisecond.
        if isinstance(data, bytes):
            self._sdata, self._sbase = data, base + h.str_off
        else:
            self._sdata = bytes(memoryview(data)[base + h.str_off: base + h.str_off + h.str_len])
            self._sbase = 0
        self._slen = h.str_len
        if h.str_len and self._sdata[self._sbase] != 0:
            raise BTFError("BTF string section does not start with NUL")
        raw = memoryview(data)[base + h.type_off: base + h.type_off + h.type_len]
        words: Sequence[int]
        if h.little_endian == _NATIVE_LE:
            # A view of the caller's blob, not a copy: copying a 3 MB type section into fresh
            # pages costs a kernel 1-3 ms, and indexing the view is as fast as an array.
            words = raw.cast("I")
        else:
            # Every field of every record is a 32-bit word, so one byteswap of the whole
            # section gives native order (strings are bytes and need none).
            from array import array

            swapped = array("I")
            swapped.frombytes(raw)
            swapped.byteswap()
            words = swapped
        self.words = words
        self._names: dict[str, list[int]] | None = None
        self._str_cache: dict[int, str] = {}
        self._members_cache: dict[int, list[tuple[str, int, int]]] = {}
        self._wanted: dict[str, list[int]] = {}
        self._ptr_size = ptr_size
        if index is not None and not self._frames(index):
            index = None  # a stale or foreign index costs the walk, never a wrong answer
        self.index_reused = index is not None
        self.index = index if index is not None else index_types(words)
        self.offsets = self.index.offsets
        if wanted:
            # ptr_size looks up `long` and its aliases: collect them with the wanted names.
            self._collect(set(wanted) | set(_LONG_ALIASES))

    # -- indexing -------------------------------------------------------------------------

    def _frames(self, index: TypeIndex, samples: int = 256) -> bool:
        """Whether a given index frames this blob.

        The file's checksum proves the index is whole (gobtfgen.btf.index); this proves it is
        this blob's: records start at 0, the last one ends the section, and at a few hundred
        records spread over the section (and named records) the next record starts where this
        one's length says and the kind is what the index says. Checking every record would
        cost what the walk costs.
        """
        from bisect import bisect_left  # as in _collect_python

        offs = index.offsets
        words = self.words
        n = len(words)
        count = len(offs)
        if count < 1 or offs[0] != 0:
            return False
        if count == 1:
            return n == 0 and not index.named_at

        def length(at: int) -> int:
            info = words[at + 1]
            return _SKIP[info >> 24] + (info & 0xFFFF) * _MUL[info >> 24]

        try:
            if offs[1] != 0 or offs[-1] + length(offs[-1]) != n:
                return False
            for tid in range(1, count - 1, max(1, count // samples)):
                if offs[tid + 1] - offs[tid] != length(offs[tid]):
                    return False
            named = index.named_at
            for k in range(0, len(named), max(1, len(named) // samples)):
                at = named[k]
                tid = bisect_left(offs, at, 1)
                if tid >= count or offs[tid] != at \
                        or (words[at + 1] >> 24) & 0x1F not in NAMED_TYPE_KINDS:
                    return False
        except IndexError:
            return False
        return True

    def _collect(self, wanted: Collection[str], *, compiled: bool = True) -> None:
        """The named types of each wanted essential name, ascending by id.

        Only the named types' names are looked at (a sixth of the records): in C
        (gobtfgen/_native.c, names; 0.1-0.3 ms on a 100k-type kernel) where the module is
        built and the framing is its own, else by _collect_python, the reference.
        compiled=False takes the Python scan (the tests compare the two).
        """
        found: dict[str, list[int]] = {name: [] for name in wanted}
        self._wanted = found
        prefixes = _covering_prefixes(wanted)
        named_at = self.index.named_at
        if not prefixes or not named_at:
            return
        if compiled and _native is not None and isinstance(named_at, memoryview) \
                and isinstance(self.offsets, memoryview):
            # The view runs from the string section's start to the blob's end: names() tests
            # the prefixes as bytes.startswith does here, which may read past the section.
            try:
                hits = _native.names(self.words, named_at, self.offsets,
                                     memoryview(self._sdata)[self._sbase:], self._slen,
                                     prefixes, found)
            except ValueError as exc:
                raise BTFError(str(exc)) from None
            for name, tid in hits:
                found[name].append(tid)
            return
        self._collect_python(found, prefixes, named_at)

    def _collect_python(self, found: dict[str, list[int]], prefixes: tuple[bytes, ...],
                        named_at: Sequence[int]) -> None:
        """_collect in Python: their name offsets and the first byte of each name come from
        itemgetter in one call each, names starting with a byte no wanted name starts with are
        dropped by map(), and the rest meet one bytes.startswith against a few prefixes
        covering every wanted name; the few records left are checked exactly. (Measured on a
        133k-type kernel with a tracer's names: 2.8 ms, against 4.1 ms with startswith on
        every named type and 5 ms for a regex over the string section.)
        """
        # Imported here: the compiled path needs none of them, and a cold `gobtfgen minimize`
        # imports this module in every process (operator and bisect cost it about 1 ms).
        from bisect import bisect_left
        from itertools import compress
        from operator import itemgetter

        words = self.words
        sdata, sbase = self._sdata, self._sbase
        strs = memoryview(sdata)[sbase:sbase + self._slen]
        # itemgetter returns a tuple for two or more items only.
        name_offs = itemgetter(*named_at)(words) if len(named_at) > 1 else (words[named_at[0]],)
        try:
            first = itemgetter(*name_offs)(strs) if len(name_offs) > 1 else (strs[name_offs[0]],)
        except IndexError:
            raise BTFError("a BTF type's name offset is past the string section") from None
        initials = frozenset(p[0] for p in prefixes)
        pairs = zip(named_at, name_offs, strict=True)
        for at, off in compress(pairs, map(initials.__contains__, first)):
            if sdata.startswith(prefixes, sbase + off):
                hit = found.get(essential_name(self.str_at(off)))
                if hit is not None:
                    hit.append(bisect_left(self.offsets, at, 1))  # offsets[0] is void

    def _check_kinds(self) -> None:
        for tid in range(1, len(self.offsets)):
            if self.kind(tid) > _MAX_KIND:
                raise BTFError(f"BTF type {tid} has unknown kind {self.kind(tid)}")

    def validate(self) -> None:
        """Check kinds and references of every type (the walk alone checks only framing)."""
        self._check_kinds()
        count = len(self.offsets)
        for tid in range(1, count):
            for ref in self.referenced_ids(tid):
                if ref >= count:
                    raise BTFError(f"BTF type {tid} refers to missing type {ref}")
            if self.name_off(tid) >= self._slen and self._slen:
                raise BTFError(f"BTF type {tid} has a name offset past the strings")

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of ids including void (libbpf's btf__type_cnt)."""
        return len(self.offsets)

    @property
    def strings(self) -> bytes:
        return self._sdata[self._sbase:self._sbase + self._slen]

    def str_at(self, off: int) -> str:
        if off == 0:
            return ""
        hit = self._str_cache.get(off)
        if hit is not None:
            return hit
        if off >= self._slen:
            raise BTFError(f"BTF string offset {off} is past the string section")
        start = self._sbase + off
        stop = self._sbase + self._slen
        end = self._sdata.find(b"\0", start, stop)
        text = self._sdata[start:stop if end < 0 else end].decode("utf-8", "replace")
        self._str_cache[off] = text
        return text

    def _off(self, tid: int) -> int:
        if tid <= 0 or tid >= len(self.offsets):
            raise BTFError(f"BTF type id {tid} is out of range")
        return self.offsets[tid]

    # The accessors below index `offsets` directly (an id past the end raises IndexError):
    # they are the minimizer's innermost calls. Ids come from u32 words, never negative.

    def info(self, tid: int) -> int:
        return 0 if tid == 0 else self.words[self.offsets[tid] + 1]

    def kind(self, tid: int) -> int:
        return 0 if tid == 0 else (self.words[self.offsets[tid] + 1] >> 24) & 0x1F

    def kflag(self, tid: int) -> bool:
        return tid != 0 and bool(self.words[self.offsets[tid] + 1] >> 31)

    def vlen(self, tid: int) -> int:
        return 0 if tid == 0 else self.words[self.offsets[tid] + 1] & 0xFFFF

    def name_off(self, tid: int) -> int:
        return 0 if tid == 0 else self.words[self.offsets[tid]]

    def name(self, tid: int) -> str:
        return self.str_at(self.name_off(tid))

    def size(self, tid: int) -> int:
        """size_or_type: the byte size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT."""
        return 0 if tid == 0 else self.words[self.offsets[tid] + 2]

    ref = size  # size_or_type read as a type id (PTR, TYPEDEF, modifiers, FUNC, VAR, tags)

    def record_len(self, tid: int) -> int:
        """Length of the record in words."""
        info = self.info(tid)
        return _SKIP[info >> 24] + (info & 0xFFFF) * _MUL[info >> 24]

    def record(self, tid: int) -> list[int]:
        o = self._off(tid)
        return list(self.words[o:o + self.record_len(tid)])

    def int_data(self, tid: int) -> int:
        return self.words[self._off(tid) + 3]

    def int_encoding(self, tid: int) -> int:
        return (self.int_data(tid) >> 24) & 0x0F

    def int_offset(self, tid: int) -> int:
        return (self.int_data(tid) >> 16) & 0xFF

    def int_bits(self, tid: int) -> int:
        return self.int_data(tid) & 0xFF

    def array(self, tid: int) -> tuple[int, int, int]:
        """(element type, index type, nelems)."""
        o = self._off(tid) + 3
        w = self.words
        return w[o], w[o + 1], w[o + 2]

    def members(self, tid: int) -> list[tuple[int, int, int]]:
        """STRUCT/UNION members as (name_off, type, raw offset word)."""
        o = self._off(tid)
        w = self.words
        vlen = w[o + 1] & 0xFFFF
        o += 3
        return [(w[o + 3 * i], w[o + 3 * i + 1], w[o + 3 * i + 2]) for i in range(vlen)]

    def named_members(self, tid: int) -> list[tuple[str, int, int]]:
        """STRUCT/UNION members as (name, type, bit offset), decoded once per type."""
        hit = self._members_cache.get(tid)
        if hit is None:
            kflag = self.kflag(tid)
            hit = [(self.str_at(n), t, raw & 0xFFFFFF if kflag else raw)
                   for n, t, raw in self.members(tid)]
            self._members_cache[tid] = hit
        return hit

    def member(self, tid: int, idx: int) -> tuple[int, int, int]:
        o = self._off(tid) + 3 + 3 * idx
        w = self.words
        return w[o], w[o + 1], w[o + 2]

    def member_bit_offset(self, tid: int, idx: int) -> int:
        raw = self.member(tid, idx)[2]
        return raw & 0xFFFFFF if self.kflag(tid) else raw

    def member_bitfield_size(self, tid: int, idx: int) -> int:
        return self.member(tid, idx)[2] >> 24 if self.kflag(tid) else 0

    def enum_values(self, tid: int) -> list[tuple[int, int]]:
        """ENUM/ENUM64 enumerators as (name_off, value as unsigned 64-bit as libbpf reads it)."""
        o = self._off(tid)
        w = self.words
        vlen = w[o + 1] & 0xFFFF
        o += 3
        if (w[o - 2] >> 24) & 0x1F == ENUM:
            # libbpf stores btf_enum.val (s32) into a u64: negative values sign-extend.
            out = []
            for i in range(vlen):
                v = w[o + 2 * i + 1]
                out.append((w[o + 2 * i], v | 0xFFFFFFFF00000000 if v & 0x80000000 else v))
            return out
        return [(w[o + 3 * i], w[o + 3 * i + 1] | (w[o + 3 * i + 2] << 32)) for i in range(vlen)]

    def params(self, tid: int) -> list[tuple[int, int]]:
        """FUNC_PROTO parameters as (name_off, type)."""
        o = self._off(tid)
        w = self.words
        vlen = w[o + 1] & 0xFFFF
        o += 3
        return [(w[o + 2 * i], w[o + 2 * i + 1]) for i in range(vlen)]

    def referenced_ids(self, tid: int) -> list[int]:
        """Every type id the record refers to (libbpf's btf_type_visit_type_ids order)."""
        kind = self.kind(tid)
        o = self._off(tid)
        w = self.words
        if kind in _REF_KINDS:
            out = [w[o + 2]]
            if kind == FUNC_PROTO:
                out.extend(t for _, t in self.params(tid))
            return out
        if kind == ARRAY:
            return [w[o + 3], w[o + 4]]
        if kind in (STRUCT, UNION):
            return [m[1] for m in self.members(tid)]
        if kind == DATASEC:
            vlen = self.vlen(tid)
            return [w[o + 3 + 3 * i] for i in range(vlen)]
        return []

    # -- names ----------------------------------------------------------------------------

    def by_essential_name(self, name: str, kinds: Collection[int] | None = None) -> list[int]:
        """Ids of the types whose essential name is `name` (and kind one of `kinds`), ascending.

        Announced names of named type kinds come from what the constructor collected; anything
        else (an unannounced name, or kinds that include FUNC, VAR and the like) from a full
        name index built on first use.
        """
        hits = self._wanted.get(name)
        if hits is None or kinds is None or not NAMED_TYPE_KINDS.issuperset(kinds):
            if self._names is None:
                names: dict[str, list[int]] = {}
                for tid in range(1, len(self.offsets)):
                    off = self.name_off(tid)
                    if off:
                        names.setdefault(essential_name(self.str_at(off)), []).append(tid)
                self._names = names
            hits = self._names.get(name, [])
        if kinds is None:
            return list(hits)
        return [t for t in hits if self.kind(t) in kinds]

    def find_named(self, name: str, kinds: Iterable[int] | None = None) -> list[int]:
        """Ids with exactly this name (and one of these kinds)."""
        ks = None if kinds is None else frozenset(kinds)
        return [t for t in self.by_essential_name(essential_name(name), ks)
                if self.name(t) == name]

    @property
    def ptr_size(self) -> int:
        """libbpf's btf_ptr_sz: the size of a `long` alias, else the host's (8)."""
        if self._ptr_size is None:
            # libbpf's determine_ptr_size: the first INT (by id) named like `long`.
            hits = [t for alias in _LONG_ALIASES for t in self.find_named(alias, (INT,))
                    if self.size(t) in (4, 8)]
            self._ptr_size = self.size(min(hits)) if hits else 8
        return self._ptr_size


# ---------------------------------------------------------------------------------------------
# Writer


class BTFWriter:
    """Builds a raw BTF blob the way libbpf's btf__new_empty + btf__add_* do.

    Strings are interned in first-use order with deduplication (libbpf's strset), offset 0 is
    the empty string, and the header is libbpf's 24-byte one in little-endian order, so the
    output of the compatible minimizer is byte-for-byte bpftool's.
    """

    def __init__(self) -> None:
        # A list, packed once by to_bytes: as fast as an array("I") (faster on a kernel's 24k
        # words, measured), and the cold `gobtfgen minimize` does not import array.
        self._words: list[int] = []
        self._strs = bytearray(b"\0")
        self._str_index: dict[str, int] = {}
        self.count = 0

    def add_str(self, s: str) -> int:
        if not s:
            return 0
        off = self._str_index.get(s)
        if off is None:
            off = len(self._strs)
            self._strs += s.encode() + b"\0"
            self._str_index[s] = off
        return off

    def add_record(self, words: Iterable[int]) -> int:
        """Append one record (already remapped, strings already interned); return its id."""
        self._words.extend(words)
        self.count += 1
        return self.count

    def to_bytes(self, *, little_endian: bool = True, hdr_len: int = HEADER_LEN) -> bytes:
        """The blob; hdr_len=32 writes libbpf >= 1.8's header (empty layout section)."""
        order = "<" if little_endian else ">"
        try:
            types = struct.pack(f"{order}{len(self._words)}I", *self._words)
        except struct.error:
            # what array("I") raised when the word was added
            raise OverflowError("a BTF record word is not an unsigned 32-bit integer") from None
        hdr = struct.pack(order + "HBBIIIII", MAGIC, 1, 0, hdr_len, 0, len(types),
                          len(types), len(self._strs))
        hdr += b"\0" * (hdr_len - HEADER_LEN)
        return hdr + types + bytes(self._strs)


class Builder(BTFWriter):
    """Builds BTF type by type (libbpf's btf__add_* API), for tests and custom kernels."""

    def _add(self, name: str, kind: int, vlen: int, kflag: bool, size_or_type: int,
             tail: Iterable[int] = ()) -> int:
        return self.add_record([self.add_str(name), info_word(kind, vlen, kflag),
                                size_or_type, *tail])

    def add_int(self, name: str, size: int, *, signed: bool = False, bits: int | None = None,
            offset: int = 0, encoding: int | None = None) -> int:
        enc = encoding if encoding is not None else (INT_SIGNED if signed else 0)
        nbits = size * 8 if bits is None else bits
        return self._add(name, INT, 0, False, size, [(enc << 24) | (offset << 16) | nbits])

    def add_float(self, name: str, size: int) -> int:
        return self._add(name, FLOAT, 0, False, size)

    def ptr(self, target: int) -> int:
        return self._add("", PTR, 0, False, target)

    def ref(self, kind: int, target: int, name: str = "") -> int:
        """TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG (name is the tag)."""
        return self._add(name, kind, 0, False, target)

    def typedef(self, name: str, target: int) -> int:
        return self._add(name, TYPEDEF, 0, False, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self._add("", ARRAY, 0, False, 0, [elem, index, nelems])

    def composite(self, name: str, size: int, members: Sequence[tuple[str, int, int, int]], *,
                  union: bool = False, kflag: bool | None = None) -> int:
        """members: (name, type, bit offset, bitfield size); kflag defaults to "any bitfield"."""
        if kflag is None:
            kflag = any(bits for _, _, _, bits in members)
        tail: list[int] = []
        for mname, mtype, bit_off, bits in members:
            raw = (bits << 24) | bit_off if kflag else bit_off
            tail += (self.add_str(mname), mtype, raw)
        return self._add(name, UNION if union else STRUCT, len(members), kflag, size, tail)

    def struct(self, name: str, size: int, members: Sequence[tuple[str, int, int, int]],
               *, kflag: bool | None = None) -> int:
        return self.composite(name, size, members, kflag=kflag)

    def union(self, name: str, size: int, members: Sequence[tuple[str, int, int, int]]) -> int:
        return self.composite(name, size, members, union=True)

    def enum(self, name: str, size: int, values: Sequence[tuple[str, int]], *,
             signed: bool = False) -> int:
        tail: list[int] = []
        for vname, val in values:
            tail += (self.add_str(vname), val & 0xFFFFFFFF)
        return self._add(name, ENUM, len(values), signed, size, tail)

    def enum64(self, name: str, size: int, values: Sequence[tuple[str, int]], *,
               signed: bool = False) -> int:
        tail: list[int] = []
        for vname, val in values:
            val &= (1 << 64) - 1
            tail += (self.add_str(vname), val & 0xFFFFFFFF, val >> 32)
        return self._add(name, ENUM64, len(values), signed, size, tail)

    def fwd(self, name: str, *, union: bool = False) -> int:
        return self._add(name, FWD, 0, union, 0)

    def func_proto(self, ret: int, params: Sequence[tuple[str, int]]) -> int:
        tail: list[int] = []
        for pname, ptype in params:
            tail += (self.add_str(pname), ptype)
        return self._add("", FUNC_PROTO, len(params), False, ret, tail)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self._add(name, FUNC, linkage, False, proto)

    def var(self, name: str, vtype: int, linkage: int = 1) -> int:
        return self._add(name, VAR, 0, False, vtype, [linkage])

    def datasec(self, name: str, size: int, vars_: Sequence[tuple[int, int, int]]) -> int:
        tail: list[int] = []
        for vtype, off, sz in vars_:
            tail += (vtype, off, sz)
        return self._add(name, DATASEC, len(vars_), False, size, tail)

    def decl_tag(self, name: str, target: int, component_idx: int = -1) -> int:
        return self._add(name, DECL_TAG, 0, False, target, [component_idx & 0xFFFFFFFF])


def info_word(kind: int, vlen: int, kflag: bool) -> int:
    return (int(kflag) << 31) | (kind << 24) | (vlen & 0xFFFF)


__all__ = [
    "ARRAY", "BTF", "BTFError", "BTFWriter", "Builder", "CONST", "DATASEC", "DECL_TAG", "ENUM",
    "ENUM64", "FLOAT", "FUNC", "FUNC_PROTO", "FWD", "Header", "INT", "INT_SIGNED", "KIND_NAMES",
    "MODS", "PTR", "RESTRICT", "STRUCT", "TYPEDEF", "TYPE_TAG", "UNION", "UNKN", "VAR", "VOLATILE",
    "essential_name", "essential_name_len", "info_word", "parse_header",
]
