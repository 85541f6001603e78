"""The payload packer and its reference decoder (gobtfgen/pack.py, docs/payload-format.md):
version 2 (nodes) for every shape of input, version 1 (whole blobs) for the C and Rust
targets, and corrupt payloads."""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from gobtfgen import pack
from gobtfgen.btf import INT, PTR, UNION
from gobtfgen.errors import InputError
from tests import payloadcases
from tests.payloadcases import family, kernel, rec, struct_rec


def v2(entries: dict[str, bytes], arch: str = "x86_64") -> tuple[bytes, pack.PackStats]:
    payload, stats = pack.pack(arch, entries)
    assert payload[4] == 2 and stats.version == 2
    got_arch, back = pack.unpack(payload)
    assert got_arch == arch and back == entries  # byte for byte, every key
    return payload, stats


def decoder(payload: bytes) -> pack.Payload2:
    _, _, _, _, clen, ilen = pack.HEADER.unpack_from(payload)
    index = zlib.decompress(payload[pack.HEADER.size:pack.HEADER.size + clen], -15)
    assert len(index) == ilen
    return pack.Payload2(payload, pack.HEADER.size + clen, index)


# ---- version 2 -------------------------------------------------------------------------------


def test_rebuilds_every_kernel_byte_for_byte_from_shared_nodes() -> None:
    entries = family(30)
    payload, stats = v2(entries)
    assert stats.raw_kernels == 0 and stats.blobs == len(set(entries.values()))
    # Ten distinct types a kernel; what varies is task_struct (and nothing that points to it:
    # the pointer refers to the name, an anchor), so the nodes are the shared nine plus one
    # task_struct per layout.
    layouts = len({(i // 3, i % 3) for i in range(30)})
    assert stats.nodes == 9 + layouts
    assert stats.payload_bytes < 0.07 * stats.raw_bytes


def test_new_task_struct_layouts_are_derived_nodes() -> None:
    # A new layout keeps the members and their types: stored as its size and offsets only. A
    # layout with one more member cannot be, and is a full node.
    entries = family(30) | {"ubuntu/22.04/x86_64/5.15.0-1-generic":
                            kernel(9500, 1300, extra=True)}
    payload, stats = v2(entries)
    x = decoder(payload)
    nodes = x.nodes(set(range(1, stats.nodes + 1)))
    (task_name,) = (s for s, text in x.strings(set(range(1, x.string_count + 1))).items()
                    if text == b"task_struct")
    task = sorted(n for n, (name, _, _) in nodes.items() if name == task_name)
    assert len(task) == stats.nodes - 9
    full = [n for n in task if n not in x.derived]
    assert len(full) == 2  # the first layout, and the one with an extra member
    assert full[0] == task[0]


def test_same_input_same_bytes_whatever_the_order() -> None:
    a = family(12) | {f"d/1/x86_64/r{i}": os.urandom(1) * (i + 1) for i in range(20)}
    b = dict(reversed(list(a.items())))
    assert pack.pack("x86_64", a)[0] == pack.pack("x86_64", b)[0]


def test_empty_payload_is_valid() -> None:
    payload, stats = v2({}, "arm64")
    assert stats.entries == 0 and payload.startswith(pack.MAGIC)
    assert pack.unpack(payload) == ("arm64", {})


def test_blobs_it_cannot_rebuild_are_stored_raw() -> None:
    good = kernel(9000, 1300)
    # Not bpftool's layout: a string nobody refers to, strings out of first-use order,
    # a 32-byte header, big-endian, not BTF at all.
    magic, ver, flags, hdr_len, toff, tlen, soff, slen = struct.unpack_from("<HBBIIIII", good)
    unreferenced = struct.pack("<HBBIIIII", magic, ver, flags, hdr_len, toff, tlen, soff,
                               slen + 4) + good[24:] + b"pad\0"
    header32 = struct.pack("<HBBIIIII", magic, ver, flags, 32, toff, tlen, soff, slen) \
        + bytes(8) + good[24:]
    entries = {"a/1/x86_64/good": good, "a/1/x86_64/unref": unreferenced,
               "a/1/x86_64/hdr32": header32, "a/1/x86_64/noise": os.urandom(3000),
               "a/1/x86_64/empty": b"", "a/1/x86_64/short": b"\x9f\xeb"}
    _, stats = v2(entries)
    assert stats.raw_kernels == 5


def test_identical_types_in_one_kernel_keep_their_own_ids() -> None:
    # Two identical `void *` and two identical structs referring to different ones: a kernel
    # BTF (python-compat keeps duplicates) in which ids must come back exactly.
    types = [rec(PTR, "", 0), rec(PTR, "", 0),
             struct_rec("", 8, [("a", 1, 0)]), struct_rec("", 8, [("a", 2, 0)]),
             struct_rec("", 8, [("a", 1, 0)]), rec(INT, "int", 4, 32)]
    other = types[:4] + [rec(INT, "int", 4, 32)]
    entries = {"a/1/x86_64/r1": pack.build_btf(types), "a/1/x86_64/r2": pack.build_btf(other)}
    _, stats = v2(entries)
    assert stats.raw_kernels == 0


def test_cyclic_types_merge_across_kernels_whatever_their_ids() -> None:
    # struct node { struct node *next; struct node2 *peer } and the same graph with the types
    # in another order (other ids) and an unrelated type in front: one set of nodes serves
    # both, the ids of each kernel come back as they were.
    def graph(order: list[str]) -> bytes:
        at = {name: i + 1 for i, name in enumerate(order)}
        make = {
            "pad": rec(INT, "int", 4, 32),
            "anon": struct_rec("", 8, [("x", at["anonptr"], 0)]),  # anonymous: no anchor
            "anonptr": rec(PTR, "", at["anon"]),
            "ptr": rec(PTR, "", at["anon"]),
            "u": rec(UNION, "", 8, "p", at["ptr"], 0, vlen=1),
        }
        return pack.build_btf([make[name] for name in order])

    entries = {"a/1/x86_64/r1": graph(["pad", "anon", "anonptr", "ptr", "u"]),
               "a/1/x86_64/r2": graph(["anonptr", "u", "ptr", "anon"] + ["pad"])}
    _, stats = v2(entries)
    assert stats.raw_kernels == 0 and stats.nodes == 5


def test_many_groups_and_long_base_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small groups and chains: a lookup gathers nodes and strings from several groups and
    # follows its kernel's bases.
    monkeypatch.setattr(pack, "MAX_CHAIN", 3)
    entries = family(40)
    payload, stats = pack.pack("x86_64", entries, group_target=100)
    assert pack.unpack(payload)[1] == entries
    x = decoder(payload)
    assert len(x.groups) > 3
    assert any(g.strings == 0 for g in x.groups[1:])  # strings from earlier groups
    depth = []
    for k in range(len(x.kernels)):
        d, row = 0, k
        while x.kernels[row].back:
            row -= x.kernels[row].back
            d += 1
        depth.append(d)
    assert max(depth) == 3


def test_unknown_kind_and_oversized_kernels_fall_back_to_raw(
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = kernel(9000, 1300)
    words = bytearray(good)
    struct.pack_into("<I", words, 24 + 4, 25 << 24)  # kind 25: no shape
    monkeypatch.setattr(pack, "MAX_LIST", 5)
    _, stats = v2({"a/1/x86_64/kind": bytes(words), "a/1/x86_64/big": good})
    assert stats.raw_kernels == 2


def test_the_writer_uses_the_readers_group_limit() -> None:
    # The test below lowers pack.MAX_GROUP_LEN; what the writer keeps to by default must be
    # the limit every runtime enforces.
    templates = Path(__file__).resolve().parents[1] / "templates"
    limits = {"btfgen.go.j2": r"btfgenMaxGroupLen\s*= (\d+) << (\d+)\n",
              "btfgen.c.j2": r"#define BTFGEN_MAX_GROUP_LEN \((\d+)u << (\d+)\)\n",
              "btfgen.rs.j2": r"const MAX_GROUP_LEN: u64 = (\d+) << (\d+);\n"}
    for name, pattern in limits.items():
        found = re.search(pattern, (templates / name).read_text())
        assert found is not None, f"{name}: no group limit matching {pattern!r}"
        assert int(found[1]) << int(found[2]) == pack.MAX_GROUP_LEN, name


def test_kernels_stored_whole_start_a_new_group_before_the_readers_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Thirty-two kernels stored whole (not BTF), 990 bytes each, then (in payload order) a
    # family of node kernels: under a limit of 4,000 bytes a group, one group holds four whole
    # kernels, and the nodes after the last such group (no node in it yet, so past
    # group_target without starting a new one) go to it while they fit, then to a new one. The
    # reference reader enforces the same (lowered) limit.
    limit = 4000
    monkeypatch.setattr(pack, "MAX_GROUP_LEN", limit)
    entries = {f"raw/1/x86_64/r{i:02}": b"raw%02d" % i + os.urandom(985) for i in range(32)}
    entries |= family(6)
    payload, stats = v2(entries)
    assert stats.raw_kernels == 32 and stats.nodes > 0
    x = decoder(payload)
    sizes = [sum(g.lengths) for g in x.groups]
    assert max(sizes) <= limit and len(x.groups) == 32 // 4 + 1, sizes
    assert x.groups[-1].lengths[4] == 0 and x.groups[-1].nodes > 0

    too_big = {"big/1/x86_64/r": os.urandom(limit + 1)}
    with pytest.raises(InputError, match=r"big/1/x86_64/r: its minimized BTF is 4,001 bytes"):
        pack.pack("x86_64", too_big)


def test_list_program_round_trip() -> None:
    base = [1, 2, 3, 4, 5, 6, 7]
    target = [1, 2, 9, 10, 4, 5, 7, 3, 11]
    program = pack.list_program(target, base, first_new=9)
    c = pack._Cursor(program, "ops")
    ops = [c.uvarint() for _ in range(c.uvarint())]
    rebuilt, at, fresh = [], 0, 9
    for op in ops:
        code, arg = op & 3, op >> 2
        if code == pack.OP_COPY:
            rebuilt += base[at:at + arg]
        if code in (pack.OP_COPY, pack.OP_SKIP):
            at += arg
        elif code == pack.OP_NEW:
            rebuilt += range(fresh, fresh + arg)
            fresh += arg
        elif code == pack.OP_NODE:
            rebuilt.append(arg)
    assert rebuilt == target


# ---- version 1 (the C and Rust targets' payloads) --------------------------------------------


def v1(entries: dict[str, bytes], **kw: str) -> tuple[bytes, pack.PackStats]:
    payload, stats = pack.pack("x86_64", entries, version=pack.LEGACY_VERSION, **kw)
    assert payload[4] == 1 and stats.version == 1
    assert pack.unpack(payload)[1] == entries
    return payload, stats


def test_v1_roundtrip_dedups_identical_blobs() -> None:
    entries = {
        "ubuntu/20.04/x86_64/5.4.0-1": b"A" * 1000,
        "ubuntu/20.04/x86_64/5.4.0-2": b"A" * 1000,
        "centos/7/x86_64/3.10.0-1": b"B" * 500,
    }
    payload, stats = v1(entries)
    assert stats.entries == 3 and stats.blobs == 2
    assert stats.raw_bytes == 2500 and stats.unique_bytes == 1500
    assert stats.payload_bytes == len(payload)


def test_v1_blobs_spread_over_several_chunks() -> None:
    v1({f"d/1/x86_64/r{i:03}": os.urandom(40_000) for i in range(20)})


def test_v1_similar_kernels_compress_against_each_other() -> None:
    base = os.urandom(20_000)
    _, stats = v1({f"d/1/x86_64/r{i}": base[:-i - 1] + bytes([i]) for i in range(20)})
    # 20 near-copies of 20 kB of noise: the DEFLATE window makes each after the first ~free.
    assert stats.payload_bytes < 0.15 * stats.raw_bytes


def test_similarity_order_puts_each_blob_beside_its_family() -> None:
    # Two families of near-copies whose keys interleave (as two distro series can): in key
    # order each blob's relative is one 20 kB noise blob back, with the similarity order it is
    # the blob just before; the payload reads back the same and is smaller.
    family_ = [os.urandom(20_000), os.urandom(20_000)]
    entries = {f"d/1/x86_64/r{i:02}": family_[i % 2][:-i - 1] + bytes([i]) for i in range(24)}
    blobs = [entries[k] for k in sorted(entries)]
    order = pack.similarity_order(blobs)
    assert sorted(order) == list(range(len(blobs)))
    first_of_b = order.index(1)
    assert all(i % 2 == 0 for i in order[:first_of_b]) and first_of_b == 12
    similar, _ = v1(entries)
    by_key, _ = v1(entries, order="key")
    assert len(similar) < 0.8 * len(by_key)


def test_version_2_beats_version_1_on_btf() -> None:
    entries = family(30)
    # 672 against 816 bytes (both through Zopfli; with zlib, version 1 was over 900).
    assert v2(entries)[1].payload_bytes < 0.85 * v1(entries)[1].payload_bytes


# ---- corrupt payloads ------------------------------------------------------------------------


def _with_index(payload: bytes, edit: Callable[[bytearray, pack.Payload2], None]) -> bytes:
    """The payload with its inflated index edited (the index crc recomputed, so the edit
    reaches the check behind it); edit gets the index without its crc, and its decoding."""
    _, _, _, _, clen, _ = pack.HEADER.unpack_from(payload)
    index = bytearray(zlib.decompress(payload[16:16 + clen], -15))
    x = pack.Payload2(payload, 16 + clen, bytes(index))
    del index[-4:]
    edit(index, x)
    index += struct.pack("<I", zlib.crc32(index))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    index_c = comp.compress(bytes(index)) + comp.flush()
    return pack.HEADER.pack(pack.MAGIC, 2, 0, 0, len(index_c), len(index)) + index_c \
        + payload[16 + clen:]


def _flip_last_kernel_crc(index: bytearray, x: pack.Payload2) -> None:
    index[x.kernels[-1].at - 4] ^= 1  # its tag is one byte, then its crc


def _node_past_the_end(index: bytearray, x: pack.Payload2) -> None:
    # The last kernel's first op becomes NODE (node count + 1).
    at = x.kernels[-1].at + 1
    end = at
    while index[end] & 0x80:
        end += 1
    index[at:end + 1] = pack._uvarint((x.node_count + 1) << 2 | pack.OP_NODE)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p[:10], "shorter than its header"),
    (lambda p: b"XXXX" + p[4:], "bad magic"),
    (lambda p: p[:4] + b"\x09" + p[5:], "format version 9"),
    (lambda p: p[:8] + struct.pack("<I", 1 << 30) + p[12:], "out of range"),
    (lambda p: p[:20] + bytes(8) + p[28:], "index"),
    (lambda p: p[:-8], "group 0"),
    (lambda p: _with_index(p, _flip_last_kernel_crc), "kernel 2 fails its checksum"),
    (lambda p: _with_index(p, _node_past_the_end), "names node"),
    (lambda p: _with_index(p, lambda i, x: i.extend(b"\0")), "trailing bytes"),
])
def test_corrupt_payloads_raise_payload_error(mutate, message) -> None:  # type: ignore[no-untyped-def]
    payload, _ = pack.pack("x86_64", family(3))
    with pytest.raises(pack.PayloadError, match=message):
        pack.unpack(mutate(payload))


def test_index_checksum_catches_a_flipped_index_byte() -> None:
    payload, _ = pack.pack("x86_64", family(3))
    _, _, _, _, clen, _ = pack.HEADER.unpack_from(payload)
    index = bytearray(zlib.decompress(payload[16:16 + clen], -15))
    index[3] ^= 0x40
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    index_c = comp.compress(bytes(index)) + comp.flush()
    bad = pack.HEADER.pack(pack.MAGIC, 2, 0, 0, len(index_c), len(index)) + index_c \
        + payload[16 + clen:]
    with pytest.raises(pack.PayloadError, match="index fails its checksum"):
        pack.unpack(bad)


@pytest.mark.parametrize("name", sorted(payloadcases.hardening_cases()))
def test_hardening_vectors(name: str) -> None:
    """Payloads that each break one hardening rule (the Go, C and Rust readers get the same
    ones and give the same text)."""
    payload, error = payloadcases.hardening_cases()[name]
    if error is None:
        assert len(pack.unpack(payload)[1]) > 1
        return
    with pytest.raises(pack.PayloadError) as exc:
        pack.unpack(payload)
    assert error in str(exc.value)


def test_writer_chains_stay_within_the_readers_bound() -> None:
    """pack() never makes a chain of bases longer than the readers accept: 60 kernels of one
    family, each best coded against the one before it."""
    payload, _ = pack.pack("x86_64", family(60))
    _, _, _, _, clen, _ = pack.HEADER.unpack_from(payload)
    x = pack.Payload2(payload, 16 + clen, zlib.decompress(payload[16:16 + clen], -15))
    depth: list[int] = []
    for i, k in enumerate(x.kernels):
        depth.append(depth[i - k.back] + 1 if k.back else 0)
    assert max(depth) == pack.MAX_CHAIN
    assert len(pack.unpack(payload)[1]) == 60
