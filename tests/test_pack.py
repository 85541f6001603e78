from __future__ import annotations

import os
import struct

import pytest

from gobtfgen import pack


def test_roundtrip_dedups_identical_blobs() -> None:
    entries = {
        "ubuntu/20.04/x86_64/5.4.0-1": b"A" * 1000,
        "ubuntu/20.04/x86_64/5.4.0-2": b"A" * 1000,
        "centos/7/x86_64/3.10.0-1": b"B" * 500,
    }
    payload, stats = pack.pack("x86_64", entries)
    arch, back = pack.unpack(payload)
    assert arch == "x86_64"
    assert back == entries
    assert stats.entries == 3 and stats.blobs == 2
    assert stats.raw_bytes == 2500 and stats.unique_bytes == 1500
    assert stats.payload_bytes == len(payload)


def test_same_input_same_bytes_whatever_the_order() -> None:
    a = {f"d/1/x86_64/r{i}": os.urandom(1) * (i + 1) for i in range(50)}
    b = dict(reversed(list(a.items())))
    assert pack.pack("x86_64", a)[0] == pack.pack("x86_64", b)[0]


def test_empty_payload_is_valid() -> None:
    payload, stats = pack.pack("arm64", {})
    assert pack.unpack(payload) == ("arm64", {})
    assert stats.entries == 0 and payload.startswith(pack.MAGIC)


def test_blobs_spread_over_several_chunks() -> None:
    entries = {f"d/1/x86_64/r{i:03}": os.urandom(40_000) for i in range(20)}
    payload, _ = pack.pack("x86_64", entries)
    assert pack.unpack(payload)[1] == entries


def test_similar_kernels_compress_against_each_other() -> None:
    base = os.urandom(20_000)
    entries = {f"d/1/x86_64/r{i}": base[:-i - 1] + bytes([i]) for i in range(20)}
    payload, stats = pack.pack("x86_64", entries)
    # 20 near-copies of 20 kB of noise: the DEFLATE window makes each after the first ~free.
    assert stats.payload_bytes < 0.15 * stats.raw_bytes


def test_similarity_order_puts_each_blob_beside_its_family() -> None:
    # Two families of near-copies whose keys interleave (as two distro series can): in key
    # order each blob's relative is one 20 kB noise blob back, with the similarity order it is
    # the blob just before; the payload reads back the same and is smaller.
    family = [os.urandom(20_000), os.urandom(20_000)]
    entries = {f"d/1/x86_64/r{i:02}": family[i % 2][:-i - 1] + bytes([i]) for i in range(24)}
    blobs = [entries[k] for k in sorted(entries)]
    order = pack.similarity_order(blobs)
    assert sorted(order) == list(range(len(blobs)))
    first_of_b = order.index(1)
    assert all(i % 2 == 0 for i in order[:first_of_b]) and first_of_b == 12
    similar, _ = pack.pack("x86_64", entries)
    by_key, _ = pack.pack("x86_64", entries, order="key")
    assert pack.unpack(similar)[1] == pack.unpack(by_key)[1] == entries
    assert len(similar) < 0.8 * len(by_key)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p[:10], "shorter than its header"),
    (lambda p: b"XXXX" + p[4:], "bad magic"),
    (lambda p: p[:4] + b"\x09" + p[5:], "format version"),
    (lambda p: p[:8] + struct.pack("<I", 1 << 30) + p[12:], "out of range"),
    (lambda p: p[:20] + bytes(8) + p[28:], "index"),
    (lambda p: p[:-8], "chunk"),
])
def test_corrupt_payloads_raise_payload_error(mutate, message) -> None:  # type: ignore[no-untyped-def]
    payload, _ = pack.pack("x86_64", {"a/1/x86_64/r": os.urandom(3000)})
    with pytest.raises(pack.PayloadError, match=message):
        pack.unpack(mutate(payload))
