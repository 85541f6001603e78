"""Dedup and compression: many minimized BTFs of one arch into one payload file.

The format is described in docs/payload-format.md; the Go reader lives in templates/btfgen.go.j2,
the C and Rust readers in templates/btfgen.c.j2 and templates/btfgen.rs.j2.

Version 2 (what pack() writes by default) stores every distinct type once per arch as a node:
types of all kernels are hash-consed (kind, name, sizes, offsets and the nodes they refer to,
cycles included, by partition refinement), and each kernel is a short program over a similar
kernel's list of nodes. A reader rebuilds the matched kernel's minimized BTF byte for byte;
the packer checks that rebuild for every kernel and stores a kernel whose bytes it cannot
reproduce as it is, so correctness never depends on a layout rule. The Go, C and Rust runtimes
all read version 2; version 1 (whole minimized BTFs in DEFLATE chunks) is only written on
request (the benchmark's comparison, tests of the readers' regenerate error), and unpack()
reads both.
"""

from __future__ import annotations

import difflib
import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gobtfgen.errors import InputError

MAGIC = b"GBTF"
VERSION = 2  # what pack() writes unless asked otherwise
LEGACY_VERSION = 1
VERSIONS = (LEGACY_VERSION, VERSION)
HEADER = struct.Struct("<4sBBHII")
MAX_INDEX_LEN = 64 << 20
# The Go, C and Rust readers reject a group whose columns add up to more (btfgenMaxGroupLen,
# BTFGEN_MAX_GROUP_LEN, MAX_GROUP_LEN): the writer starts a new group before one would.
MAX_GROUP_LEN = 64 << 20
# Under this much room left in a group, the writer bounds the next node's bytes before adding
# it (one node of 65,535 members takes about 1 MiB); above it, no node can fill the room.
NODE_ROOM = 4 << 20
# Version 1: about 256 KiB of minimized BTF per chunk: a lookup inflates one chunk (well under a
# millisecond), while neighbouring kernels of one distro still share a DEFLATE window.
CHUNK_TARGET = 256 << 10
# Zopfli's default: more iterations save a few bytes on the sample (2,237 -> 2,235 at 50) at
# three times the packing time.
ZOPFLI_ITERATIONS = 15
# Zopfli's cost grows faster than its input: 0.7 s for the 70 KB a 1,400-kernel arch packs,
# 2.4 s for 138 KB (2,900 kernels), about the time a whole relocations-changed run spends on
# all of them (at any iteration count: one iteration still takes 1.5 s there). Above this
# input size, zlib at level 9 (1-2 ms): 25% larger there, 0.06% of the kernels' bpftool size
# instead of 0.05% (the per-kernel keys dominate such payloads). The sample's payloads stay
# far under it.
ZOPFLI_MAX_INPUT = 48 << 10
# Similarity ordering (see docs/payload-format.md, "Kernel order"): 8-byte shingles sampled every
# 4 bytes, compared against what DEFLATE's 32 KiB window still holds; the next blob is chosen
# among the first ORDER_CANDIDATES unplaced ones in key order, so packing stays linear in the
# number of kernels (a full-archive run has thousands) and keeps distro neighbours together.
SHINGLE = 8
WINDOW = 32 << 10
ORDER_CANDIDATES = 32

# ---- version 2 ------------------------------------------------------------------------------

# Word roles (docs/payload-format.md, "Shapes and roles"): where a word of a type record is
# stored and how it is rebuilt. The readers know nothing else about BTF kinds than where the
# kind and vlen sit in the info word: the payload carries this table, indexed by kind.
ROLE_LIT, ROLE_DELTA, ROLE_TYPE, ROLE_NAME = 0, 1, 2, 3
_L, _D, _T, _S = ROLE_LIT, ROLE_DELTA, ROLE_TYPE, ROLE_NAME
# kind -> (roles of the words after name_off and info, roles of each of the vlen groups).
# Member offsets, enumerator values and datasec offsets are stored as deltas from the previous
# group's word: consecutive members are a few bits apart, while their absolute offsets differ
# from kernel to kernel and would break every DEFLATE match after an inserted member.
SHAPES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    1: ((_L, _L), ()),  # INT: size, encoding
    2: ((_T,), ()),  # PTR
    3: ((_L, _T, _T, _L), ()),  # ARRAY: 0, elem, index, nelems
    4: ((_L,), (_S, _T, _D)),  # STRUCT: size; members
    5: ((_L,), (_S, _T, _D)),  # UNION
    6: ((_L,), (_S, _D)),  # ENUM: size; enumerators
    7: ((_L,), ()),  # FWD
    8: ((_T,), ()),  # TYPEDEF
    9: ((_T,), ()),  # VOLATILE
    10: ((_T,), ()),  # CONST
    11: ((_T,), ()),  # RESTRICT
    12: ((_T,), ()),  # FUNC (vlen is the linkage: no groups)
    13: ((_T,), (_S, _T)),  # FUNC_PROTO: return type; params
    14: ((_T, _L), ()),  # VAR: type, linkage
    15: ((_L,), (_T, _D, _L)),  # DATASEC: size; vars
    16: ((_L,), ()),  # FLOAT
    17: ((_T, _L), ()),  # DECL_TAG: type, component_idx
    18: ((_T,), ()),  # TYPE_TAG
    19: ((_L,), (_S, _D, _L)),  # ENUM64: size; enumerators
}
BTF_HEADER = struct.Struct("<HBBIIIII")
BTF_MAGIC = 0xEB9F
# A node group is inflated whole by a lookup that needs one of its nodes: about this many
# bytes of columns per group keeps a lookup's inflation bounded at full-archive scale while
# a sample-sized payload stays one group (each group costs a DEFLATE header).
GROUP_TARGET = 64 << 10
# A kernel's node list is a program over a similar earlier kernel's list (its base): of the
# BASE_CANDIDATES kernels before it in payload order, the PROGRAMS_TRIED sharing the most nodes
# are tried, and chains of bases stay at most MAX_CHAIN long, so a lookup decodes a few short
# lists at most.
BASE_CANDIDATES = 8
PROGRAMS_TRIED = 3
MAX_CHAIN = 16
# Readers reject a kernel list longer than this (docs/payload-format.md, "Node lists").
MAX_LIST = 1 << 20
# List program opcodes (low 2 bits of each op; the argument is op >> 2).
OP_COPY, OP_SKIP, OP_NEW, OP_NODE = 0, 1, 2, 3


class PayloadError(ValueError):
    """A payload that does not follow docs/payload-format.md."""


@dataclass(frozen=True, kw_only=True)
class PackStats:
    entries: int
    blobs: int  # unique minimized BTFs
    raw_bytes: int  # sum of every entry's minimized BTF (what lab3 would embed)
    unique_bytes: int  # sum of unique blobs
    payload_bytes: int
    version: int = LEGACY_VERSION
    nodes: int = 0  # distinct types (version 2)
    raw_kernels: int = 0  # unique BTFs stored whole because their rebuild differed (version 2)


def _deflate(data: bytes) -> bytes:
    return _deflate_parts([data])


def _deflate_parts(parts: Sequence[bytes]) -> bytes:
    """One raw DEFLATE stream (what Go's compress/flate, zlib and miniz_oxide read with no
    zlib/gzip framing) of the parts concatenated, made by Zopfli: an exhaustive DEFLATE
    encoder that also chooses where blocks (and their Huffman codes) start, so each column
    still gets codes fitted to it. On the payloads it is 3-4% smaller than zlib at level 9
    with a flush between parts (docs/payload-format.md, "Why this design"); readers see an
    ordinary stream. Inputs over ZOPFLI_MAX_INPUT (whole-archive payloads) get zlib level 9."""
    data = b"".join(parts)
    if not data or len(data) > ZOPFLI_MAX_INPUT:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return comp.compress(data) + comp.flush()
    from zopfli.zopfli import compress  # a packer-only dependency: readers never need it

    # zlib framing: 2 header bytes, the raw DEFLATE stream, 4 bytes of Adler-32.
    return bytes(compress(data, numiterations=ZOPFLI_ITERATIONS)[2:-4])


def _uvarint(n: int) -> bytes:
    """LEB128: 7 bits a byte, low bits first, high bit set on every byte but the last."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> int:
    return (n << 1) if n >= 0 else ((-n << 1) - 1)


def _delta32(value: int, prev: int) -> int:
    """zigzag(value - prev), the difference taken modulo 2^32 as a signed word."""
    return _zigzag((value - prev + (1 << 31)) % (1 << 32) - (1 << 31))


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _rotl8(w: int) -> int:
    return ((w << 8) | (w >> 24)) & 0xFFFFFFFF


def _rotr8(w: int) -> int:
    return ((w >> 8) | (w << 24)) & 0xFFFFFFFF


def _shingles(blob: bytes) -> frozenset[bytes]:
    return frozenset(blob[i:i + SHINGLE] for i in range(0, len(blob) - SHINGLE + 1, 4))


def similarity_order(blobs: list[bytes]) -> list[int]:
    """Blob numbers in packing order: each next blob is the candidate sharing the largest part
    of its shingles with the blobs still inside the DEFLATE window (ties: first in key order).
    Deterministic, so the same input still gives the same payload bytes."""
    if not blobs:
        return []
    shingles = [_shingles(b) for b in blobs]
    order = [0]
    unplaced = list(range(1, len(blobs)))  # kept in key order
    while unplaced:
        window: set[bytes] = set()
        size = 0
        for i in reversed(order):
            if size and size + len(blobs[i]) > WINDOW:
                break
            window |= shingles[i]
            size += len(blobs[i])
        best_pos, best_score = 0, -1.0
        for pos, j in enumerate(unplaced[:ORDER_CANDIDATES]):
            score = len(shingles[j] & window) / max(1, len(shingles[j]))
            if score > best_score:
                best_pos, best_score = pos, score
        order.append(unplaced.pop(best_pos))
    return order


def _unique_blobs(entries: Mapping[str, bytes]) -> tuple[list[str], list[bytes], list[int]]:
    """Keys sorted by bytes, the distinct blobs in key order of first use, each key's blob."""
    keys = sorted(entries, key=lambda k: k.encode())
    blob_index: dict[bytes, int] = {}  # sha256 -> blob number
    blobs: list[bytes] = []
    entry_blob: list[int] = []
    for key in keys:
        data = entries[key]
        digest = hashlib.sha256(data).digest()
        if digest not in blob_index:
            blob_index[digest] = len(blobs)
            blobs.append(data)
        entry_blob.append(blob_index[digest])
    return keys, blobs, entry_blob


# Bump when pack() would write other bytes for the same input (a compressor setting, the order,
# the format): payloads kept in the cache under pack_key are then packed again.
# 2: groups stay within MAX_GROUP_LEN (a long run of kernels stored whole made a group the
# readers reject).
PACKER_REVISION = 2


def pack_key(arch: str, entries: Mapping[str, bytes], *, version: int = VERSION) -> str:
    """What pack(arch, entries, version=version) depends on, hashed: the cache keeps payloads
    under it, so a run whose minimized BTFs are those of an earlier run (an edit that kept the
    relocations) packs nothing (Zopfli takes about a second on the sample's payloads)."""
    from gobtfgen import __version__

    h = hashlib.sha256(f"gobtfgen {__version__} packer {PACKER_REVISION}\0{arch}\0{version}\0"
                       .encode())
    for key in sorted(entries, key=lambda k: k.encode()):
        h.update(key.encode() + b"\0" + hashlib.sha256(entries[key]).digest())
    return h.hexdigest()


def pack(arch: str, entries: Mapping[str, bytes], *, version: int = VERSION,
         order: str = "similar", group_target: int | None = None) -> tuple[bytes, PackStats]:
    """Build the payload for one arch from {key: minimized BTF}. Same input, same bytes.

    version 2 is the node format; version 1 the whole-blob chunks (the benchmark's comparison
    and the readers' regenerate-error tests: no runtime reads it any more). order="key"
    keeps blobs (version 1) or kernels (version 2) in key order of first use instead of
    similarity order; both orders are the same format, readers find everything through the
    index. group_target (version 2) is the column bytes after which a new group starts
    (tests make it small)."""
    if version == LEGACY_VERSION:
        return _pack_v1(arch, entries, order=order)
    if version != VERSION:
        raise ValueError(f"payload format version {version}: gobtfgen writes {VERSIONS}")
    return _pack_v2(arch, entries, order=order,
                    group_target=GROUP_TARGET if group_target is None else group_target)


def _pack_v1(arch: str, entries: Mapping[str, bytes], *, order: str) -> tuple[bytes, PackStats]:
    keys, blobs, entry_blob = _unique_blobs(entries)
    chunks: list[bytes] = []  # inflated chunk contents
    current = bytearray()
    placement = similarity_order(blobs) if order == "similar" else list(range(len(blobs)))
    rows: dict[int, tuple[int, int, int, int]] = {}
    for blob_no in placement:
        blob = blobs[blob_no]
        if current and len(current) + len(blob) > CHUNK_TARGET:
            chunks.append(bytes(current))
            current = bytearray()
        rows[blob_no] = (len(chunks), len(current), len(blob), zlib.crc32(blob))
        current += blob
    # Blob rows stay numbered in key order of first use: only their offsets follow placement.
    blob_rows = [rows[i] for i in range(len(blobs))]
    if current:
        chunks.append(bytes(current))

    data_area = bytearray()
    chunk_rows: list[tuple[int, int, int]] = []
    for chunk in chunks:
        compressed = _deflate(chunk)
        chunk_rows.append((len(data_area), len(compressed), len(chunk)))
        data_area += compressed

    index = bytearray()
    arch_b = arch.encode()
    index += struct.pack("<H", len(arch_b)) + arch_b
    index += struct.pack("<I", len(chunk_rows))
    for row in chunk_rows:
        index += struct.pack("<III", *row)
    index += struct.pack("<I", len(blob_rows))
    for brow in blob_rows:
        index += struct.pack("<IIII", *brow)
    index += struct.pack("<I", len(keys))
    for key, blob_no in zip(keys, entry_blob, strict=True):
        key_b = key.encode()
        index += struct.pack("<H", len(key_b)) + key_b + struct.pack("<I", blob_no)
    index_c = _deflate(bytes(index))
    payload = HEADER.pack(MAGIC, LEGACY_VERSION, 0, 0, len(index_c), len(index)) + index_c \
        + data_area
    return payload, PackStats(entries=len(keys), blobs=len(blobs),
                              raw_bytes=sum(len(entries[k]) for k in keys),
                              unique_bytes=sum(len(b) for b in blobs),
                              payload_bytes=len(payload), version=LEGACY_VERSION)


# A parsed type: its roles (one per word) and its cells: an int for literal words, the string
# (bytes, b"" for offset 0) for name words, the local type id for type words.
Cell = int | bytes


@dataclass(frozen=True)
class TypeRecord:
    roles: tuple[int, ...]
    cells: tuple[Cell, ...]


def record_roles(kind: int, vlen: int) -> tuple[int, ...] | None:
    shape = SHAPES.get(kind)
    if shape is None:
        return None
    head, group = shape
    return (_S, _L, *head, *(group * vlen if group else ()))


def parse_types(blob: bytes) -> list[TypeRecord] | None:
    """The types of a minimized BTF in the layout version 2 rebuilds (bpftool's: little-endian,
    24-byte header, types then strings, every kind known), or None when it is not that."""
    if len(blob) < BTF_HEADER.size:
        return None
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
        BTF_HEADER.unpack_from(blob)
    if (magic, version, flags, hdr_len, type_off) != (BTF_MAGIC, 1, 0, BTF_HEADER.size, 0) \
            or type_len % 4 or str_off != type_len \
            or BTF_HEADER.size + str_off + str_len != len(blob):
        return None
    words = struct.unpack_from(f"<{type_len // 4}I", blob, BTF_HEADER.size)
    strings = blob[BTF_HEADER.size + str_off:]
    if not strings or strings[0] != 0:
        return None

    def text(off: int) -> bytes | None:
        end = strings.find(b"\0", off)
        return None if end < 0 else strings[off:end]

    types: list[TypeRecord] = []
    i = 0
    while i < len(words):
        if i + 2 > len(words):
            return None
        info = words[i + 1]
        roles = record_roles((info >> 24) & 0x1F, info & 0xFFFF)
        if roles is None or i + len(roles) > len(words):
            return None
        cells: list[Cell] = []
        for role, word in zip(roles, words[i:i + len(roles)], strict=True):
            if role == _S:
                name = text(word)
                if name is None:
                    return None
                cells.append(name)
            else:
                cells.append(word)
        types.append(TypeRecord(roles=roles, cells=tuple(cells)))
        i += len(roles)
    count = len(types)
    for t in types:
        if any(r == _T and c > count for r, c in zip(t.roles, t.cells, strict=True)):  # type: ignore[operator]
            return None
    return types


def build_btf(types: Sequence[TypeRecord]) -> bytes:
    """A BTF from parsed types as bpftool writes it: strings interned in first-use order (word
    order, type by type), offset 0 for the empty name, the 24-byte header."""
    strings = bytearray(b"\0")
    offsets: dict[bytes, int] = {}
    words: list[int] = []
    for t in types:
        for role, cell in zip(t.roles, t.cells, strict=True):
            if role == _S:
                assert isinstance(cell, bytes)
                if not cell:
                    words.append(0)
                    continue
                off = offsets.get(cell)
                if off is None:
                    off = offsets[cell] = len(strings)
                    strings += cell + b"\0"
                words.append(off)
            else:
                assert isinstance(cell, int)
                words.append(cell)
    body = struct.pack(f"<{len(words)}I", *words)
    return BTF_HEADER.pack(BTF_MAGIC, 1, 0, BTF_HEADER.size, 0, len(body), len(body),
                           len(strings)) + body + bytes(strings)


# A reference as the hash-consing sees it: -1 void, <= -2 an anchor (a name unique in its
# kernel, numbered), >= 0 the global item number of the target type.
_VOID = -1


def hash_cons(kernels: Sequence[Sequence[TypeRecord]]) -> tuple[list[int], list[list[int]],
                                                         dict[bytes, int]]:
    """Classes of all types of all kernels: two types share a class when their kinds, names and
    literal words are equal and their references lead to the same classes (the coarsest such
    partition, so cyclic structs merge too; computed by refinement from the partition by
    local content). A reference to a type whose name no other type of its kernel has is an
    anchor (the name) rather than the target's class: a new task_struct then does not make
    every pointer to it, and every struct holding such a pointer, a new node. No class holds
    two types of one kernel, so within a kernel a node names one type.

    Returns (class of each item, items' references, anchor numbers by name), items numbered
    kernel by kernel in id order."""
    local_key: dict[tuple[object, ...], int] = {}
    cls: list[int] = []
    refs: list[list[int]] = []
    owner: list[int] = []
    anchors: dict[bytes, int] = {}
    base = 0
    for k, types in enumerate(kernels):
        name_count: dict[bytes, int] = {}
        for t in types:
            name = t.cells[0]
            assert isinstance(name, bytes)
            if name:
                name_count[name] = name_count.get(name, 0) + 1
        for t in types:
            key: list[object] = [t.roles]
            item_refs: list[int] = []
            for role, cell in zip(t.roles, t.cells, strict=True):
                if role != _T:
                    key.append(cell)
                    continue
                assert isinstance(cell, int)
                if cell == 0:
                    item_refs.append(_VOID)
                    continue
                target_name = types[cell - 1].cells[0]
                assert isinstance(target_name, bytes)
                if target_name and name_count[target_name] == 1:
                    item_refs.append(-2 - anchors.setdefault(target_name, len(anchors)))
                else:
                    item_refs.append(base + cell - 1)
            cls.append(local_key.setdefault(tuple(key), len(local_key)))
            refs.append(item_refs)
            owner.append(k)
        base += len(types)
    count = len(local_key)
    while True:
        while True:  # refine by the classes references lead to, until stable
            ids: dict[tuple[int, ...], int] = {}
            nxt = [ids.setdefault((c, *(cls[r] if r >= 0 else r for r in rs)), len(ids))
                   for c, rs in zip(cls, refs, strict=True)]
            if len(ids) == count:
                break
            cls, count = nxt, len(ids)
        # Split classes holding two types of one kernel by occurrence (first, second, ...);
        # references then tell them apart, which may refine further.
        seen: dict[tuple[int, int], int] = {}
        ids = {}
        nxt = []
        for c, k in zip(cls, owner, strict=True):
            occurrence = seen.get((k, c), 0)
            seen[(k, c)] = occurrence + 1
            nxt.append(ids.setdefault((c, occurrence), len(ids)))
        if len(ids) == count:
            break
        cls, count = nxt, len(ids)
    return cls, refs, anchors


@dataclass
class _Group:
    first_node: int
    first_string: int
    strings: bytearray
    sref: bytearray
    lit: bytearray
    tref: bytearray
    raw: bytearray
    nodes: int = 0
    string_count: int = 0

    def size(self) -> int:
        return len(self.strings) + len(self.sref) + len(self.lit) + len(self.tref) \
            + len(self.raw)


def _new_group(first_node: int, first_string: int) -> _Group:
    return _Group(first_node=first_node, first_string=first_string, strings=bytearray(),
                  sref=bytearray(), lit=bytearray(), tref=bytearray(), raw=bytearray())


def list_program(lst: Sequence[int], base: Sequence[int], first_new: int) -> bytes:
    """The ops that turn base into lst (docs/payload-format.md, "Node lists"): the longest
    common runs are copied, nodes new in this kernel (numbered first_new on, in list order)
    cost one op per run, other nodes one op each."""
    ops: list[tuple[int, int]] = []

    def emit(op: int, arg: int) -> None:
        if ops and ops[-1][0] == op and op != OP_NODE:
            ops[-1] = (op, ops[-1][1] + arg)
        else:
            ops.append((op, arg))

    nxt = first_new
    bpos = pos = 0
    matcher = difflib.SequenceMatcher(None, base, lst, autojunk=False)
    for a, b, n in matcher.get_matching_blocks():
        if a > bpos:
            emit(OP_SKIP, a - bpos)
        for node in lst[pos:b]:
            if node == nxt:
                emit(OP_NEW, 1)
                nxt += 1
            else:
                emit(OP_NODE, node)
        if n:
            emit(OP_COPY, n)
        bpos, pos = a + n, b + n
    return _uvarint(len(ops)) + b"".join(_uvarint(arg << 2 | op) for op, arg in ops)


def _pack_v2(arch: str, entries: Mapping[str, bytes], *, order: str,
             group_target: int) -> tuple[bytes, PackStats]:
    keys, blobs, entry_blob = _unique_blobs(entries)
    placement = similarity_order(blobs) if order == "similar" else list(range(len(blobs)))
    row_of = {blob_no: row for row, blob_no in enumerate(placement)}
    parsed: list[list[TypeRecord] | None] = []
    for blob_no in placement:
        types = parse_types(blobs[blob_no])
        # Only what rebuilds to the very same bytes is stored as nodes.
        parsed.append(types if types is not None and len(types) <= MAX_LIST
                      and build_btf(types) == blobs[blob_no] else None)
    node_rows = [row for row, types in enumerate(parsed) if types is not None]
    cls, refs, anchors = hash_cons([parsed[row] or [] for row in node_rows])
    anchor_name = {-2 - a: name for name, a in anchors.items()}

    # Nodes are numbered in order of first use, kernel by kernel in payload order: a kernel's
    # new nodes are then consecutive, and a list op can say "the next n new nodes".
    node_of_class: dict[int, int] = {}
    first_item: list[int] = [0]  # node -> an item of its class (index 0 unused: void)
    lists: dict[int, list[int]] = {}
    item = 0
    for row in node_rows:
        lst = []
        for _ in parsed[row] or []:
            c = cls[item]
            if c not in node_of_class:
                node_of_class[c] = len(first_item)
                first_item.append(item)
            lst.append(node_of_class[c])
            item += 1
        lists[row] = lst
    item_cells: list[TypeRecord] = [t for row in node_rows for t in parsed[row] or []]

    groups: list[_Group] = [_new_group(1, 1)]
    string_no: dict[bytes, int] = {}

    def string(name: bytes) -> int:
        # Strings are numbered in first use by the column scan, so each group holds a range.
        n = string_no.get(name)
        if n is None:
            n = string_no[name] = len(string_no) + 1
            groups[-1].strings += name + b"\0"
            groups[-1].string_count += 1
        return n

    def stored_tref(r: int) -> int:
        if r == _VOID:
            return 0
        if r <= -2:
            return 2 * string(anchor_name[r]) + 1
        return 2 * node_of_class[cls[r]] + 2

    # Within a group, the last node of each name and its info, type and name words: a node
    # of that name whose info, type and name words are the same is stored derived (its
    # literal words only): a new version of task_struct costs its new offsets and size.
    last_of_name: dict[int, tuple[int, list[int]]] = {}
    node_done = 0

    def most_bytes(it: int) -> int:
        # At most what a node adds to its group: each word a varint of at most 5 bytes (stored
        # words are under 2^35), every name in it and every anchor it refers to a new string.
        t = item_cells[it]
        return 5 * len(t.roles) + sum(len(c) + 1 for c in t.cells if isinstance(c, bytes)) \
            + sum(len(anchor_name[r]) + 1 for r in refs[it] if r <= -2)

    def emit_nodes_upto(last: int) -> None:
        nonlocal node_done
        while node_done < last:
            node_done += 1
            it = first_item[node_done]
            t = item_cells[it]
            g = groups[-1]
            size = g.size()
            # A group of kernels stored whole and no node yet may already be past group_target:
            # it takes nodes while they fit the readers' limit.
            if g.nodes and size >= group_target or size and size > MAX_GROUP_LEN - NODE_ROOM \
                    and size + most_bytes(it) > MAX_GROUP_LEN:
                groups.append(_new_group(node_done, len(string_no) + 1))
                g = groups[-1]
                last_of_name.clear()
            name_cell, info = t.cells[0], t.cells[1]
            assert isinstance(name_cell, bytes) and isinstance(info, int)
            name = string(name_cell) if name_cell else 0
            head, group = SHAPES[(info >> 24) & 0x1F]
            ref_iter = iter(refs[it])
            # The type and name words as stored, in word order.
            shared = [stored_tref(next(ref_iter)) if role == _T else
                      (string(cell) if cell else 0)  # type: ignore[arg-type]
                      for role, cell in zip(t.roles[2:], t.cells[2:], strict=True)
                      if role in (_T, _S)]
            derived = bool(name) and last_of_name.get(name) == (info, shared)
            if derived:
                # Readers bound a node by the bytes it takes (4 words a byte, plus 4); only a
                # derived node of a kind without literal words could exceed it.
                taken = len(_uvarint(name << 1 | 1)) + sum(
                    1 for role in t.roles[2:] if role in (_L, _D))
                derived = len(t.roles) - 2 <= 4 * taken + 4
            if name:
                last_of_name[name] = (info, shared)
            if derived:
                g.sref += _uvarint(name << 1 | 1)
            else:
                g.sref += _uvarint(name << 1)
                g.lit += _uvarint(_rotl8(info))
            shared_at = 0
            for pos in range(2, len(t.roles)):
                role, cell = t.roles[pos], t.cells[pos]
                if role == _L:
                    assert isinstance(cell, int)
                    g.lit += _uvarint(cell)
                elif role == _D:
                    assert isinstance(cell, int)
                    prev_pos = pos - len(group)
                    prev = t.cells[prev_pos] if prev_pos >= 2 + len(head) else 0
                    assert isinstance(prev, int)
                    g.lit += _uvarint(_delta32(cell, prev))
                else:
                    if not derived:
                        (g.tref if role == _T else g.sref).extend(_uvarint(shared[shared_at]))
                    shared_at += 1
            g.nodes += 1

    kernel_rows: list[bytes] = []
    depth: dict[int, int] = {}
    seen_nodes = 0
    raw_kernels = 0
    for row, blob_no in enumerate(placement):
        blob = blobs[blob_no]
        if parsed[row] is None:
            raw_kernels += 1
            if len(blob) > MAX_GROUP_LEN:
                names = ", ".join(k for k, b in zip(keys, entry_blob, strict=True)
                                  if b == blob_no)
                raise InputError(f"{names}: its minimized BTF is {len(blob):,} bytes, over the "
                                 f"{MAX_GROUP_LEN:,} a payload can hold for one kernel; leave "
                                 "the kernel out of the archive")
            g = groups[-1]
            if g.size() + len(blob) > MAX_GROUP_LEN:
                groups.append(_new_group(node_done + 1, len(string_no) + 1))
                g = groups[-1]
                last_of_name.clear()
            kernel_rows.append(_uvarint(1) + struct.pack("<I", zlib.crc32(blob))
                               + _uvarint(len(groups) - 1) + _uvarint(len(g.raw))
                               + _uvarint(len(blob)))
            g.raw += blob
            continue
        lst = lists[row]
        first_new = seen_nodes + 1
        # The candidates sharing the most nodes get a program each (difflib is the packer's
        # slowest step at thousands of kernels); no base at all is always a candidate.
        members = set(lst)
        shared = sorted((-len(members.intersection(lists[row - back])), back)
                         for back in range(1, BASE_CANDIDATES + 1)
                         if row - back in lists and depth[row - back] < MAX_CHAIN)
        best: tuple[int, bytes] | None = None
        for back in [0] + [b for _, b in shared[:PROGRAMS_TRIED]]:
            program = list_program(lst, lists[row - back] if back else [], first_new)
            if best is None or len(program) < len(best[1]):
                best = (back, program)
        assert best is not None
        back, program = best
        depth[row] = depth[row - back] + 1 if back else 0
        seen_nodes = max(seen_nodes, max(lst, default=0))
        emit_nodes_upto(seen_nodes)
        kernel_rows.append(_uvarint(back << 1) + struct.pack("<I", zlib.crc32(blob)) + program)

    data_area = bytearray()
    group_rows = bytearray()
    for g in groups:
        # A node whose names alone fill a group (past NODE_ROOM): no reader would take it.
        if g.size() > MAX_GROUP_LEN:
            raise InputError(f"{arch}: a payload group of {g.size():,} bytes, over the "
                             f"readers' {MAX_GROUP_LEN:,}: a type's names are too long to pack")
        parts = [bytes(g.strings), bytes(g.sref), bytes(g.lit), bytes(g.tref), bytes(g.raw)]
        compressed = _deflate_parts(parts)
        group_rows += _uvarint(len(data_area)) + _uvarint(len(compressed))
        group_rows += b"".join(_uvarint(v) for v in (g.nodes, g.string_count, *map(len, parts)))
        data_area += compressed

    # The index's sections go in DEFLATE blocks of their own (keys are text, the rest varints).
    arch_b = arch.encode()
    tables = bytearray(_uvarint(len(arch_b)) + arch_b)
    used_kinds = {(t.cells[1] >> 24) & 0x1F for t in item_cells}  # type: ignore[operator]
    n_shapes = max(used_kinds, default=-1) + 1
    tables += _uvarint(n_shapes)
    for kind in range(n_shapes):
        head, group = SHAPES[kind] if kind in used_kinds else ((), ())
        tables += _uvarint(len(head)) + bytes(head) + _uvarint(len(group)) + bytes(group)
    tables += _uvarint(len(groups)) + group_rows
    tables += _uvarint(len(kernel_rows)) + b"".join(kernel_rows)
    entry_rows = bytearray(_uvarint(len(keys)))
    for key, blob_no in zip(keys, entry_blob, strict=True):
        key_b = key.encode()
        entry_rows += _uvarint(len(key_b)) + key_b + _uvarint(row_of[blob_no])
    index = bytes(tables + entry_rows)
    index += struct.pack("<I", zlib.crc32(index))
    index_c = _deflate_parts([bytes(tables), index[len(tables):]])
    payload = HEADER.pack(MAGIC, VERSION, 0, 0, len(index_c), len(index)) + index_c + data_area
    return payload, PackStats(entries=len(keys), blobs=len(blobs),
                              raw_bytes=sum(len(entries[k]) for k in keys),
                              unique_bytes=sum(len(b) for b in blobs),
                              payload_bytes=len(payload), version=VERSION,
                              nodes=len(first_item) - 1, raw_kernels=raw_kernels)


def is_payload(head: bytes) -> bool:
    return head[:4] == MAGIC


# ---- reading (the reference decoder the tests hold the Go, C and Rust readers to) ------------

def unpack(payload: bytes) -> tuple[str, dict[str, bytes]]:
    """Read a payload (version 1 or 2) back into (arch, {key: minimized BTF}); raises
    PayloadError."""
    if len(payload) < HEADER.size:
        raise PayloadError("payload shorter than its header")
    magic, version, _flags, _res, index_clen, index_len = HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise PayloadError("bad magic (not a gobtfgen payload)")
    if version not in VERSIONS:
        raise PayloadError(f"payload format version {version}, this gobtfgen reads "
                           f"{' and '.join(map(str, VERSIONS))}")
    if index_len > MAX_INDEX_LEN or HEADER.size + index_clen > len(payload):
        raise PayloadError("index length out of range")
    data_start = HEADER.size + index_clen
    index = _inflate(payload[HEADER.size:data_start], index_len, "index")
    if version == LEGACY_VERSION:
        return _unpack_v1(payload, data_start, index)
    return Payload2(payload, data_start, index).unpack()


def _inflate(data: bytes, length: int, what: str) -> bytes:
    """A raw DEFLATE stream that must inflate to exactly length bytes and end there: one byte
    more is inflated at most, and a stream that gives it is an error, as the Go, C and Rust
    readers have it (docs/payload-format.md, "Conventions")."""
    try:
        d = zlib.decompressobj(-15)
        out = d.decompress(data, length + 1)
    except zlib.error as exc:
        raise PayloadError(f"payload: {what}: does not inflate: {exc}") from None
    if len(out) > length:
        raise PayloadError(f"payload: {what}: inflates to more than its declared length")
    if len(out) < length or not d.eof:
        raise PayloadError(f"payload: {what}: ends before its declared length "
                           "or does not end there")
    return out


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise PayloadError("a name in the index is not UTF-8") from None


def _unpack_v1(payload: bytes, data_start: int, index: bytes) -> tuple[str, dict[str, bytes]]:
    pos = 0

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(index):
            raise PayloadError("index truncated")
        values = struct.unpack_from(fmt, index, pos)
        pos += size
        return values

    def take_bytes(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(index):
            raise PayloadError("index truncated")
        pos += n
        return index[pos - n:pos]

    (arch_len,) = take("<H")
    arch = _text(take_bytes(arch_len))
    (n_chunks,) = take("<I")
    chunks: list[bytes] = []
    for _ in range(n_chunks):
        off, clen, raw_len = take("<III")
        if data_start + off + clen > len(payload):
            raise PayloadError("chunk out of range")
        try:
            chunk = zlib.decompress(payload[data_start + off:data_start + off + clen], -15)
        except zlib.error as exc:
            raise PayloadError(f"chunk does not inflate: {exc}") from None
        if len(chunk) != raw_len:
            raise PayloadError("chunk length mismatch")
        chunks.append(chunk)
    (n_blobs,) = take("<I")
    blobs: list[bytes] = []
    for _ in range(n_blobs):
        chunk_no, off, length, crc = take("<IIII")
        if chunk_no >= len(chunks) or off + length > len(chunks[chunk_no]):
            raise PayloadError("blob out of range")
        blob = chunks[chunk_no][off:off + length]
        if zlib.crc32(blob) != crc:
            raise PayloadError("blob checksum mismatch")
        blobs.append(blob)
    (n_entries,) = take("<I")
    out: dict[str, bytes] = {}
    for _ in range(n_entries):
        (key_len,) = take("<H")
        key = _text(take_bytes(key_len))
        (blob_no,) = take("<I")
        if blob_no >= len(blobs):
            raise PayloadError("entry points past the blobs")
        out[key] = blobs[blob_no]
    return arch, out


class _Cursor:
    """Reads varints and bytes from one buffer; running off its end is a PayloadError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise PayloadError(f"{self.what} truncated")
            b = self.data[self.pos]
            self.pos += 1
            if shift == 28 and b > 0x0F:
                raise PayloadError(f"{self.what}: varint over 32 bits")
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise PayloadError(f"{self.what} truncated")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def count(self) -> int:
        """A count of items of at least one byte each, checked against the bytes left."""
        n = self.uvarint()
        if n > len(self.data) - self.pos:
            raise PayloadError(f"{self.what}: count {n} exceeds its bytes")
        return n


@dataclass(frozen=True)
class _GroupRow:
    offset: int
    clen: int
    nodes: int
    strings: int
    lengths: tuple[int, ...]  # strings, names, lits, types, raw columns
    first_node: int
    first_string: int


@dataclass(frozen=True)
class _KernelRow:
    raw: bool
    crc: int  # crc32 of the kernel's minimized BTF
    back: int  # node form: rows back to the base (0: none)
    at: int  # node form: where its ops start in the index
    first_new: int  # node form: its first fresh node
    group: int = 0  # raw form: where its bytes are
    offset: int = 0
    length: int = 0


# A decoded node: its name (string number), info, and the words after info as stored
# (literal words rebuilt, type words as 0 / 2s+1 / 2n+2, name words as string numbers).
_Node = tuple[int, int, list[int]]


class Payload2:
    """A version 2 payload, read the way docs/payload-format.md describes it (and the Go, C
    and Rust readers do it): the index once, then per kernel only the groups it needs."""

    def __init__(self, payload: bytes, data_start: int, index: bytes) -> None:
        self.data = payload[data_start:]
        if len(index) < 4 or zlib.crc32(index[:-4]) != struct.unpack("<I", index[-4:])[0]:
            raise PayloadError("payload index fails its checksum")
        self.index = index = index[:-4]
        c = _Cursor(index, "payload index")
        self.arch = _text(c.take(c.uvarint()))
        self.shapes: list[tuple[bytes, bytes] | None] = []
        for _ in range(c.count()):
            head = c.take(c.uvarint())
            group = c.take(c.uvarint())
            if any(r > _S for r in head + group):
                raise PayloadError("payload index: unknown word role")
            self.shapes.append((head, group) if head else None)
        self.groups: list[_GroupRow] = []
        first_node = first_string = 1
        for _ in range(c.count()):
            off, clen = c.uvarint(), c.uvarint()
            nodes, strings = c.uvarint(), c.uvarint()
            lengths = tuple(c.uvarint() for _ in range(5))
            if off + clen > len(self.data) or sum(lengths) > MAX_GROUP_LEN:
                raise PayloadError(f"payload: group {len(self.groups)} out of range")
            # Groups lie in order and apart: each compressed byte is inflated at most once
            # by a lookup, however many groups it needs.
            if self.groups and off < self.groups[-1].offset + self.groups[-1].clen:
                raise PayloadError(f"payload: group {len(self.groups)} overlaps the group "
                                   "before it")
            self.groups.append(_GroupRow(off, clen, nodes, strings, lengths, first_node,
                                         first_string))
            first_node += nodes
            first_string += strings
        self.node_count, self.string_count = first_node - 1, first_string - 1
        self.kernels: list[_KernelRow] = []
        depth: list[int] = []  # bases behind each kernel row
        next_new = 1
        self.kernels_at = c.pos  # where the kernel rows start (the benchmark's breakdown)
        for row in range(c.count()):
            tag = c.uvarint()
            crc = struct.unpack("<I", c.take(4))[0]
            if tag == 1:
                group_no, offset, length = c.uvarint(), c.uvarint(), c.uvarint()
                if group_no >= len(self.groups) \
                        or offset + length > self.groups[group_no].lengths[4]:
                    raise PayloadError(f"payload: kernel {row} out of range")
                self.kernels.append(_KernelRow(raw=True, crc=crc, back=0, at=0, first_new=0,
                                               group=group_no, offset=offset, length=length))
                depth.append(0)
                continue
            back = tag >> 1
            if tag & 1 or back > row or back and self.kernels[row - back].raw:
                raise PayloadError(f"payload: kernel {row} has a bad tag")
            depth.append(depth[row - back] + 1 if back else 0)
            if depth[-1] > MAX_CHAIN:
                raise PayloadError(f"payload: kernel {row}: its chain of bases is longer than "
                                   f"{MAX_CHAIN}")
            self.kernels.append(_KernelRow(raw=False, crc=crc, back=back, at=c.pos,
                                           first_new=next_new))
            for _ in range(c.count()):
                op = c.uvarint()
                if op & 3 == OP_NEW:
                    next_new += op >> 2
        self.entries: list[tuple[str, int]] = []
        self.entries_at = c.pos
        for _ in range(c.count()):
            key = _text(c.take(c.uvarint()))
            kernel = c.uvarint()
            if kernel >= len(self.kernels):
                raise PayloadError("payload: entry points past the kernels")
            if self.entries and self.entries[-1][0].encode() >= key.encode():
                raise PayloadError(f"payload: entries not sorted at {key!r}")
            self.entries.append((key, kernel))
        if c.pos != len(index):
            raise PayloadError("payload index has trailing bytes")
        self._inflated: dict[int, bytes] = {}
        self.derived: set[int] = set()  # nodes decoded so far that were stored derived

    def unpack(self) -> tuple[str, dict[str, bytes]]:
        built: dict[int, bytes] = {}
        out: dict[str, bytes] = {}
        for key, kernel in self.entries:
            if kernel not in built:
                built[kernel] = self.kernel_btf(kernel)
            out[key] = built[kernel]
        return self.arch, out

    def group(self, g: int) -> bytes:
        if g not in self._inflated:
            row = self.groups[g]
            self._inflated[g] = _inflate(self.data[row.offset:row.offset + row.clen],
                                         sum(row.lengths), f"group {g}")
        return self._inflated[g]

    def _column(self, g: int, column: int) -> _Cursor:
        lengths = self.groups[g].lengths
        at = sum(lengths[:column])
        return _Cursor(self.group(g)[at:at + lengths[column]], f"group {g}")

    def node_list(self, kernel: int) -> list[int]:
        chain = [kernel]
        while self.kernels[chain[-1]].back:
            chain.append(chain[-1] - self.kernels[chain[-1]].back)
        lst: list[int] = []
        for k in reversed(chain):
            row = self.kernels[k]
            c = _Cursor(self.index, "payload index")
            c.pos = row.at
            base, lst, at, fresh = lst, [], 0, row.first_new
            for _ in range(c.count()):
                op = c.uvarint()
                code, arg = op & 3, op >> 2
                if arg == 0:
                    raise PayloadError(f"payload: kernel {k}: empty list op")
                if code in (OP_COPY, OP_SKIP) and at + arg > len(base):
                    raise PayloadError(f"payload: kernel {k}: list op past its base")
                # Checked before the list grows: a NEW op's argument is up to 2^30.
                grows = 1 if code == OP_NODE else 0 if code == OP_SKIP else arg
                if len(lst) + grows > MAX_LIST:
                    raise PayloadError(f"payload: kernel {k}: list too long")
                if code in (OP_COPY, OP_SKIP):
                    if code == OP_COPY:
                        lst += base[at:at + arg]
                    at += arg
                elif code == OP_NEW:
                    lst += range(fresh, fresh + arg)
                    fresh += arg
                else:
                    lst.append(arg)
        for node in lst:
            if not 1 <= node <= self.node_count:
                raise PayloadError(f"payload: kernel {kernel} names node {node} of "
                                   f"{self.node_count}")
        return lst

    def shape(self, info: int) -> tuple[bytes, bytes, int]:
        """(head roles, group roles, group count) of a node with this info word."""
        kind = (info >> 24) & 0x1F
        shape = self.shapes[kind] if kind < len(self.shapes) else None
        if shape is None:
            raise PayloadError(f"payload: a node of kind {kind}, which has no shape")
        head, group = shape
        return head, group, (info & 0xFFFF) if group else 0

    def roles(self, info: int) -> bytes:
        head, group, count = self.shape(info)
        return head + group * count

    def nodes(self, wanted: set[int]) -> dict[int, _Node]:
        """The wanted nodes, decoded from the groups that hold them."""
        found: dict[int, _Node] = {}
        for g, row in enumerate(self.groups):
            if not any(row.first_node <= n < row.first_node + row.nodes for n in wanted):
                continue
            names, lits, types = (self._column(g, i) for i in (1, 2, 3))
            last_of_name: dict[int, _Node] = {}
            for node in range(row.first_node, row.first_node + row.nodes):
                took = names.pos + lits.pos + types.pos
                h = names.uvarint()
                name = h >> 1
                template = last_of_name.get(name) if h & 1 else None
                if h & 1 and template is None:
                    raise PayloadError(f"payload: node {node} derives from a name no earlier "
                                       "node of its group has")
                info = template[1] if template else _rotr8(lits.uvarint())
                head, group, count = self.shape(info)
                roles = head + group * count
                values: list[int] = []
                for pos, role in enumerate(roles):
                    if role == _L:
                        values.append(lits.uvarint())
                    elif role == _D:
                        prev_pos = pos - len(group)
                        prev = values[prev_pos] if prev_pos >= len(head) else 0
                        values.append((prev + _unzigzag(lits.uvarint())) & 0xFFFFFFFF)
                    elif template is not None:
                        values.append(template[2][pos])
                    elif role == _T:
                        values.append(types.uvarint())
                    else:
                        values.append(names.uvarint())
                if len(values) > 4 * (names.pos + lits.pos + types.pos - took) + 4:
                    raise PayloadError(f"payload: node {node} is longer than its columns allow")
                decoded = (name, info, values)
                if template is not None:
                    self.derived.add(node)
                if name:
                    last_of_name[name] = decoded
                if node in wanted:
                    found[node] = decoded
        return found

    def strings(self, wanted: set[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for g, row in enumerate(self.groups):
            if not any(row.first_string <= s < row.first_string + row.strings for s in wanted):
                continue
            parts = self._column(g, 0).data.split(b"\0")
            if len(parts) != row.strings + 1 or parts[-1] or any(not p for p in parts[:-1]):
                raise PayloadError(f"payload: group {g} string column does not hold "
                                   f"{row.strings} strings")
            for i, text in enumerate(parts[:-1]):
                if row.first_string + i in wanted:
                    found[row.first_string + i] = text
        return found

    def kernel_btf(self, kernel: int) -> bytes:
        row = self.kernels[kernel]
        if row.raw:
            blob = self._column(row.group, 4).take(row.offset + row.length)[row.offset:]
        else:
            blob = self._rebuild(kernel)
        if zlib.crc32(blob) != row.crc:
            raise PayloadError(f"payload: kernel {kernel} fails its checksum")
        return blob

    def _rebuild(self, kernel: int) -> bytes:
        lst = self.node_list(kernel)
        local: dict[int, int] = {}
        for i, node in enumerate(lst, start=1):
            if local.setdefault(node, i) != i:
                raise PayloadError(f"payload: kernel {kernel} lists node {node} twice")
        nodes = self.nodes(set(lst))
        anchors: dict[int, int] = {}
        for i, node in enumerate(lst, start=1):
            name = nodes[node][0]
            if name:
                anchors[name] = -1 if name in anchors else i
        wanted = {nodes[n][0] for n in lst}
        for n in lst:
            wanted.update(v for v, role in zip(nodes[n][2], self.roles(nodes[n][1]),
                                               strict=True) if role == _S)
        wanted.discard(0)
        texts = self.strings(wanted)
        if len(texts) != len(wanted):
            raise PayloadError(f"payload: kernel {kernel} names a string past the table")
        strings = bytearray(b"\0")
        offsets: dict[int, int] = {}

        def string(s: int) -> int:
            if s == 0:
                return 0
            if s not in offsets:
                offsets[s] = len(strings)
                strings.extend(texts[s] + b"\0")
            return offsets[s]

        words: list[int] = []
        for node in lst:
            name, info, values = nodes[node]
            words += (string(name), info)
            for value, role in zip(values, self.roles(info), strict=True):
                if role == _T:
                    if value == 0:
                        words.append(0)
                    elif value & 1:
                        target = anchors.get(value >> 1, -1)
                        if target < 0:
                            raise PayloadError(f"payload: kernel {kernel}: no single type "
                                               f"named by string {value >> 1}")
                        words.append(target)
                    else:
                        if (value >> 1) - 1 not in local:
                            raise PayloadError(f"payload: kernel {kernel}: a node refers to "
                                               "a node the kernel lacks")
                        words.append(local[(value >> 1) - 1])
                elif role == _S:
                    words.append(string(value))
                else:
                    words.append(value)
        body = struct.pack(f"<{len(words)}I", *words)
        return BTF_HEADER.pack(BTF_MAGIC, 1, 0, BTF_HEADER.size, 0, len(body), len(body),
                               len(strings)) + body + bytes(strings)


def raw_kernel_count(payload: bytes) -> int:
    """How many kernels a version 2 payload stores whole rather than as nodes (tests and
    benchmarks check that real minimized BTFs all go the node way)."""
    if len(payload) < HEADER.size or payload[4] != VERSION:
        raise PayloadError("not a version 2 payload")
    _, _, _, _, index_clen, index_len = HEADER.unpack_from(payload)
    index = _inflate(payload[HEADER.size:HEADER.size + index_clen], index_len, "index")
    return sum(k.raw for k in Payload2(payload, HEADER.size + index_clen, index).kernels)


def entry_keys(payload: bytes) -> list[str]:
    """The keys of a payload's entries in entry order (entry i is the i-th), reading only the
    index: the Go target's full-BTF trailer names kernels by entry number."""
    if len(payload) < HEADER.size or payload[:4] != MAGIC:
        raise PayloadError("not a gobtfgen payload")
    _, version, _, _, index_clen, index_len = HEADER.unpack_from(payload)
    if version != VERSION:
        return sorted(unpack(payload)[1], key=lambda k: k.encode())
    index = _inflate(payload[HEADER.size:HEADER.size + index_clen], index_len, "index")
    return [key for key, _ in Payload2(payload, HEADER.size + index_clen, index).entries]
